"""torch.hub entry points of matnet.

    model = torch.hub.load("<owner>/matnet", "netvlad", weights="Pitts30K.mat", dims=4096)
    desc = model(model.preprocess([pil_image]))   # N x 4096, L2-normalised

``netvlad(weights, dims=None, sha256=None)``: see :func:`matnet.hub.netvlad`.  The model
takes N x 3 x H x W RGB float in 0..255; ``preprocess`` turns PIL images or uint8
arrays into that.
"""
dependencies = ["torch", "numpy", "scipy", "h5py", "safetensors", "matio", "PIL"]

from matnet.hub import netvlad, preprocess  # noqa: E402,F401
