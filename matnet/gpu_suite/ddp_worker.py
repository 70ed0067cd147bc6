"""One rank of the GPU suite's torchrun step: ``python -m torch.distributed.run ...
ddp_worker.py CONFIG.json`` (started by :func:`matnet.gpu_suite.steps.torchrun`).

Joins the job (NCCL on GPUs, gloo on the CPU), runs one trainWeakly batch through
:class:`~matnet.train.batch.TupleTrainer` on the suite's network, street and
feature cache (the queries shared out over the ranks, the gradients all-reduced), then
serialAllFeats of the suite's JPEG files sharded over the ranks; rank 0 writes the
trained weights (``weights.pt``), ``ddp.bin`` and ``result.json`` into CONFIG's ``out``.
"""
import json
import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main(cfg_fn: str) -> int:
    import contextlib
    import io

    import numpy as np
    import torch
    import torch.distributed as dist

    from converters.network import load_net
    from matnet import distributed
    from matnet.extract import serialAllFeats
    from matnet.synthetic.db import dbSynthetic
    from matnet.train.opts import TrainWeaklyOpts
    from matnet.train.batch import TupleTrainer

    cfg = json.loads(Path(cfg_fn).read_text())
    out = Path(cfg["out"])
    distributed.init_from_env(cfg["cuda"])
    try:
        device = torch.device("cuda", torch.cuda.current_device()) if cfg["cuda"] else torch.device("cpu")
        opts = TrainWeaklyOpts(**cfg["opts"])
        db = dbSynthetic("train", cfg["street"])
        tr = TupleTrainer(load_net(cfg["net"]), db, opts, device=device)
        try:
            tr.set_cache(np.load(cfg["cache"][0]), np.load(cfg["cache"][1]))
            with contextlib.redirect_stdout(io.StringIO()):
                loss = tr.batch(cfg["qIDs"], cfg["lr"], np.random.default_rng(cfg["seed"]))
            names, weights = [], []
            for layer in tr.net.layers:
                for j, w in enumerate(layer.weights):
                    if w.requires_grad:
                        names.append(f"{layer.name}[{j}]")
                        weights.append(w.detach().cpu().clone())
        finally:
            tr.close()
        if distributed.is_rank0():
            torch.save(weights, out / "weights.pt")
        with contextlib.redirect_stderr(io.StringIO()):
            serialAllFeats(load_net(cfg["net"]), cfg["root"], cfg["fns"], out / "ddp.bin", useGPU=cfg["cuda"],
                           batchSize=cfg["batchSize"])
        backend = dist.get_backend() if dist.is_initialized() else "none"
        if dist.is_initialized():  # one collective on the backend even with a single rank
            t = torch.ones(1, device=device if backend == "nccl" else "cpu")
            dist.all_reduce(t)
            if int(t.item()) != distributed.world_size():
                raise RuntimeError(f"all_reduce over {backend} gave {t.item()}, expected {distributed.world_size()}")
        if distributed.is_rank0():
            (out / "result.json").write_text(json.dumps({"world_size": distributed.world_size(), "backend": backend,
                                                         "loss": loss, "names": names}))
        distributed.barrier("done")
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
