"""Two gloo processes with half the batch each must compute what one process computes with the whole batch.

Both processes run in one ``torch.multiprocessing.spawn`` (starting processes is the slow part); each
writes its results to a file and the test compares them with a single-process reference.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from tests.helpers import free_port
from vito.engine import distributed

WORLD = 2


def _bn_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(4, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 2),
    )


def _bn_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(8, 3, 6, 6, generator=g) * 3 + 1, torch.randn(8, 2, generator=g)


def _bn_loss(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # a batch-wise mean, so that the mean of the processes' losses is the whole batch's loss
    return ((net(x) - y) ** 2).mean()


def _vito():
    from vito.config import load_config
    from vito.models.vito import build_vito

    config = load_config("demo", ["model.backbone=resnet18", "model.projector_hidden=32", "model.projector_dim=16"])
    return build_vito(config)


def _views() -> torch.Tensor:
    """A global batch of 4 clips x 3 views, already augmented and normalised."""
    return torch.randn(4, 3, 3, 32, 32, generator=torch.Generator().manual_seed(2))


# The video of each clip: clip 2 (on rank 1) repeats clip 0's video (on rank 0), so masking same-video negatives
# needs the indices of both processes.
VIDEOS = torch.tensor([0, 1, 0, 2])


def _grads(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: p.grad.detach().clone() for k, p in module.named_parameters() if p.grad is not None}


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    context = distributed.setup("cpu")
    results: dict = {}
    # gather_keys: rank order and offsets
    keys = torch.full((3, 2), float(rank))
    gathered, offset = distributed.gather_keys(keys)
    results["gathered"], results["offset"] = gathered, offset
    # synchronised batch norm under DDP: loss, gradients and running statistics
    net = distributed.wrap_for_training(_bn_net(), context)
    x, y = _bn_inputs()
    part = slice(rank * 4, rank * 4 + 4)
    loss = _bn_loss(net, x[part], y[part])
    loss.backward()
    results["bn_loss"] = distributed.mean_over_processes(loss.detach())
    results["bn_grads"] = _grads(net.module)
    results["bn_buffers"] = {k: v.clone() for k, v in net.module.state_dict().items() if "running" in k}
    # the whole VITO model: loss and gradients of online network and predictor
    vito = distributed.wrap_for_training(_vito(), context)
    views = _views()[rank * 2 : rank * 2 + 2]
    loss = vito(views, VIDEOS[rank * 2 : rank * 2 + 2], gather=distributed.gather_keys)["loss"]
    loss.backward()
    results["vito_loss"] = distributed.mean_over_processes(loss.detach())
    results["vito_grads"] = _grads(vito.module)
    results.update(_stop_and_run_folder(rank, Path(out)))
    torch.save(results, Path(out) / f"rank{rank}.pt")
    distributed.cleanup()


def _stop_and_run_folder(rank: int, out: Path) -> dict:
    """A signal seen by rank 1 only stops both ranks after the same step; rank 0 decides on the run folder."""
    from vito.engine.run_folder import LOCK, RunFolder
    from vito.engine.signals import StopSignal
    from vito.engine.stopping import LossWatch
    from vito.errors import VitoError

    results: dict = {}
    stop = StopSignal()
    if rank == 1:
        stop.requested, stop.name = True, "SIGUSR1"
    watch = LossWatch(torch.device("cpu"))
    watch.add({"loss": torch.tensor(float(rank))}, step=1)
    agreed = watch.agree(stop)
    results["agreed"] = (agreed.loss, agreed.stopped_by)
    folder = out / "run"
    with RunFolder(folder, resume=False, is_main=rank == 0):
        results["locked"] = (folder / LOCK).is_file()  # rank 1 waited for rank 0 to take the lock
        torch.distributed.barrier()  # before rank 0 releases it
    if rank == 0:
        (folder / "config.yaml").write_text("{}\n")
    try:
        with RunFolder(folder, resume=False, is_main=rank == 0):
            results["refusal"] = ""
    except VitoError as error:
        results["refusal"] = str(error)
    return results


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(free_port(), str(out)), nprocs=WORLD, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


@pytest.mark.ddp
def test_gather_keys_concatenates_in_rank_order(ranks: list[dict]) -> None:
    for rank, result in enumerate(ranks):
        assert result["offset"] == 3 * rank
        assert torch.equal(result["gathered"], torch.cat([torch.zeros(3, 2), torch.ones(3, 2)]))


@pytest.mark.ddp
def test_synchronised_batch_norm_matches_one_process(ranks: list[dict]) -> None:
    net = _bn_net()
    x, y = _bn_inputs()
    loss = _bn_loss(net, x, y)
    loss.backward()
    expected = _grads(net)
    buffers = {k: v for k, v in net.state_dict().items() if "running" in k}
    for result in ranks:
        assert torch.allclose(result["bn_loss"], loss.detach(), rtol=1e-6, atol=1e-7)
        assert expected.keys() == result["bn_grads"].keys()
        for key, grad in expected.items():
            assert torch.allclose(result["bn_grads"][key], grad, rtol=1e-5, atol=1e-6), key
        for key, value in buffers.items():
            assert torch.allclose(result["bn_buffers"][key], value, rtol=1e-5, atol=1e-7), key


def test_single_process_helpers_are_identities() -> None:
    keys = torch.randn(4, 3)
    gathered, offset = distributed.gather_keys(keys)
    assert gathered is keys and offset == 0
    context = distributed.setup("cpu")
    model = _bn_net()
    assert context.world_size == 1 and context.is_main and distributed.wrap_for_training(model, context) is model


def test_cpu_sync_batch_norm_without_a_group_is_batch_norm() -> None:
    torch.manual_seed(0)
    reference = nn.BatchNorm2d(4)
    converted = distributed.convert_sync_batchnorm(nn.Sequential(nn.BatchNorm2d(4)), torch.device("cpu"))[0]
    assert isinstance(converted, distributed.CPUSyncBatchNorm)
    x = torch.randn(5, 4, 3, 3)
    assert torch.allclose(converted(x), reference(x))
    assert torch.allclose(converted.running_var, reference.running_var)


@pytest.mark.ddp
def test_vito_loss_and_gradients_match_one_process(ranks: list[dict]) -> None:
    """Keys gathered across processes + synchronised batch norm + DDP averaging = one process, whole batch."""
    vito = _vito()
    loss = vito(_views(), VIDEOS)["loss"]
    loss.backward()
    expected = _grads(vito)
    assert expected and all(k.startswith(("online.", "predictor.")) for k in expected)
    # absolute tolerance relative to the largest gradient: biases before a batch norm have exact gradient 0
    atol = 1e-5 * max(float(g.abs().max()) for g in expected.values())
    for result in ranks:
        assert torch.allclose(result["vito_loss"], loss.detach(), rtol=1e-5, atol=1e-6)
        assert expected.keys() == result["vito_grads"].keys()
        for key, grad in expected.items():
            assert torch.allclose(result["vito_grads"][key], grad, rtol=1e-4, atol=atol), key


@pytest.mark.ddp
def test_every_rank_stops_at_the_same_step_and_shares_rank_0s_run_folder(ranks: list[dict]) -> None:
    for result in ranks:
        assert result["agreed"] == (0.5, "SIGUSR1")  # mean loss, and the signal only rank 1 received
        assert result["locked"] is True
        assert "already holds a run" in result["refusal"]
    assert ranks[1]["refusal"].endswith("(reported by rank 0)")
