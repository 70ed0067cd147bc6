"""``matnet export NET --format FORMAT OUT [--dims D]``: a network (any file load_net
reads) for use outside matnet.

  onnx          the whole network as an ONNX model: input 'images' N x 3 x H x W RGB
                float32 in 0..255, output 'descriptors' N x D, L2-normalised, MATLAB
                order; batch and image size dynamic (onnxruntime runs it)
  torchscript   the same as a traced TorchScript module (torch.jit.load)
  patchnetvlad  the checkpoint Patch-NetVLAD / pytorch-NetVlad load ({'state_dict': ...}
                with torchvision VGG16 'encoder.*', 'pool.*', 'WPCA.0.*'; ImageNet input
                normalisation folded into conv1_1); name it <resumePath><num_pcs>.pth.tar
  hloc          the *_struct.mat hloc's NetVLAD extractor reads; place it as
                <torch hub dir>/netvlad/VGG16-NetVLAD-Pitts30K.mat

onnx and torchscript files are verified before they get their name: the written file
(run by onnxruntime / torch.jit.load) and matnet describe two probe images (noise and a
flat grey image) at two sizes other than the traced one; above 1e-4 relative error the
file is removed and the command fails naming the worst descriptor.  --no-verify skips
this (for networks too large to run twice), and says so.

--dims D keeps the first D dimensions, L2-normalised again (testFromFn's cropToDim;
after WPCA, the leading components).  The peers' formats need the released layout
(VGG16 to conv5_3, NetVLAD head, optional WPCA); see matnet.export for what differs."""
from __future__ import annotations

import time

from . import options as o

# matnet.export.FORMATS' keys (not imported here: building the parser stays light; a test checks they agree)
FORMAT_NAMES = ("hloc", "onnx", "patchnetvlad", "torchscript")


def add_arguments(p) -> None:
    p.add_argument("network", metavar="NET", help="network file (.mat, *_struct.mat, checkpoint or .safetensors)")
    p.add_argument("--format", required=True, choices=FORMAT_NAMES,
                   help="what to write (see above)")
    p.add_argument("output", metavar="OUT", help="output file (written to a temporary name, then renamed)")
    o.add_dims(p, help="descriptor dimensions to keep (cropToDim; default all)", repeat=False)
    p.add_argument("--no-verify", dest="verify", action="store_false",
                   help="onnx/torchscript: do not run the written file against matnet before keeping it")


def run(args) -> int:
    from converters.network import load_net

    from ..export import FORMATS
    from ..export.graph import WRITERS, export_graph
    if args.dims is not None and args.dims < 1:
        raise ValueError(f"--dims must be positive, got {args.dims}")
    t0 = time.perf_counter()
    net = load_net(args.network)
    check = ""
    if args.format in WRITERS:
        out, verified = export_graph(net, args.output, args.format, dims=args.dims, verify=args.verify)
        check = f"; verified against matnet: {verified}" if verified else \
            "; NOT verified (--no-verify): the file was not run against matnet"
    else:
        out = FORMATS[args.format](net, args.output, dims=args.dims)
    print(f"{args.network} -> {out} ({args.format}{f', {args.dims} dims' if args.dims else ''}, "
          f"{time.perf_counter() - t0:.1f} s{check})")
    return 0
