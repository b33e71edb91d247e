"""Two gloo processes take pre-training steps under DistributedDataParallel (default suite).

Each rank feeds its own batch through the production pieces (``init_distributed`` from the
torchrun environment, ``build_model``, ``wrap_model``, SGD); afterwards the ranks must hold the
same state (BatchNorm statistics aside): parameters (averaged gradients), momentum encoders
and, above all, the queues,
which must contain the keys of both ranks (keys are gathered before the enqueue). The
full loop under DDP (sampler, metrics, checkpoint) is the slow test in ``test_engine.py``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ikemtrain.config import PretrainConfig

B, T, QUEUE = 2, 12, 16  # per-rank batch, frames, queue size (two steps of 2 x 2 keys fit)
CFG = PretrainConfig(
    modalities=("joint", "velocity"),
    epochs=2,
    cross_epoch=1,
    lr=0.1,
    batch_size=B,
    queue_size=QUEUE,
    momentum=0.9,
    hidden_channels=4,
    hidden_dim=16,
    feature_dim=8,
    workers=0,
    seed=1,
)


def _views(rank: int, step: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 * rank + step)  # each rank sees other samples
    return {m: torch.randn(B, 3, T, 25, 2, generator=g) for m in CFG.modalities}


def _worker(rank: int, out_dir: str) -> None:
    from ikemtrain.engine.distributed import init_distributed, shutdown_distributed, wrap_model
    from ikemtrain.engine.loop import build_model, seed_everything

    device = torch.device("cpu")
    info = init_distributed(device)
    try:
        seed_everything(CFG.seed)  # same initial weights and queues on every rank
        model = build_model(CFG)
        net = wrap_model(model, device, info)
        opt = torch.optim.SGD(model.parameters(), lr=CFG.lr, momentum=0.9)
        model.train()
        for step, stage in enumerate((1, 2)):  # one step of each stage
            loss = net(_views(rank, 2 * step), _views(rank, 2 * step + 1), stage)["loss"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        torch.save(
            {"info": (info.rank, info.world_size), "state": model.state_dict()},
            Path(out_dir) / f"rank{rank}.pt",
        )
    finally:
        shutdown_distributed()


def test_two_gloo_ranks_end_a_step_with_identical_queues_and_weights(tmp_path, spawn_gloo) -> None:
    spawn_gloo(_worker, 2, str(tmp_path))
    saved = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert [s["info"] for s in saved] == [(0, 2), (1, 2)]
    a, b = (s["state"] for s in saved)
    assert a.keys() == b.keys()
    queues = {f"branches.{m}.queue.{k}" for m in CFG.modalities for k in ("bank", "ptr")}
    assert queues <= a.keys()
    for m in CFG.modalities:
        bank, ptr = a[f"branches.{m}.queue.bank"], a[f"branches.{m}.queue.ptr"]
        assert int(ptr) == 2 * 2 * B  # two steps, each enqueueing the keys of two ranks
        written = bank[:, : int(ptr)]
        torch.testing.assert_close(written.norm(dim=0), torch.ones(int(ptr)))
        # the columns of rank 0 and rank 1 differ: both ranks' keys, not one rank's twice
        assert not torch.allclose(written[:, :B], written[:, B : 2 * B])
    # BatchNorm statistics are each rank's own last batch (DDP broadcasts rank 0's before the
    # next forward); everything else agrees bit for bit: queues, weights, momentum encoders
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert differ and all(k.endswith(("running_mean", "running_var")) for k in differ), differ
