"""What CUDA-graph capture of the D step relies on, checked on the CPU.

On the CPU: the step never reads a tensor's value on the host nor makes a data-dependent shape,
the optimiser settings capture needs keep the lr schedule reaching the update, and a run that
cannot capture says so in one line. Where a GPU is present (``make gpu-check``), a captured run
is compared with an eager one.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from gn_plugin.errors import GnPluginError
from gn_plugin.experiments.smoke import RECIPES, smoke_config, write_stand_in_inception
from gn_plugin.training.build import setup
from gn_plugin.training.cuda_graph import check_cuda_graph, make_capturable
from gn_plugin.training.distributed import ProcessGroup
from gn_plugin.training.loop import train, train_iteration
from gn_plugin.training.run_dir import RunFiles

aten = torch.ops.aten
#: ops that need a value on the host (a device sync on CUDA) or whose output shape depends on values
HOST_SYNCING = {aten._local_scalar_dense, aten.is_nonzero, aten.item, aten.nonzero, aten.masked_select, aten._unique2,
                aten.unique_consecutive, aten.equal}


class HostSyncs(TorchDispatchMode):
    """Records every op of :data:`HOST_SYNCING` run while active, except on the tensors in ``host_tensors``."""

    def __init__(self, host_tensors: list[torch.Tensor] = ()) -> None:
        super().__init__()
        self.host_tensors = {id(t) for t in host_tensors}
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket in HOST_SYNCING and not any(id(a) in self.host_tensors for a in args):
            self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


def recipe_training(tmp_path, recipe: str, method: str, **train_options):
    config = smoke_config(
        RECIPES / recipe / f"{method}.yaml", inception=write_stand_in_inception(tmp_path / "inception.pt"),
        cache_dir=tmp_path / "cache", steps=4, width=0.125, batch=4, device="cpu",
    )
    for key, value in train_options.items():
        setattr(config.train, key, value)
    return setup(config, RunFiles(tmp_path / "run", writer=False), ProcessGroup())


@pytest.mark.parametrize("method", ["none", "sn", "gn", "gn-cr", "wgan-gp"])
@pytest.mark.parametrize("recipe", ["cifar10/cnn", "cifar10/resnet", "cifar10/biggan"])
def test_a_training_iteration_never_waits_on_the_device(tmp_path, recipe, method):
    t = recipe_training(tmp_path, recipe, method)
    train_iteration(t)  # Adam's state exists from here on
    # Adam without capturable keeps its step count on the host, on CUDA too: reading it waits on nothing
    step_counts = [state["step"] for optimizer in (t.optimizer_d, t.optimizer_g) for state in optimizer.state.values()]
    with HostSyncs(host_tensors=step_counts) as syncs:
        for _ in range(2):
            train_iteration(t)
    assert syncs.ops == []


def test_the_detector_sees_host_reads():
    with HostSyncs() as syncs:
        x = torch.ones(3)
        bool(x.sum() > 0), x.tolist(), x[x > 0]
    assert syncs.ops  # .item()/bool() and boolean-mask indexing are exactly what capture cannot hold


def test_capturable_optimizer_keeps_the_lr_schedule_and_survives_a_checkpoint():
    device = torch.device("cpu")  # make_capturable only rearranges settings; capture is tested on CUDA
    parameter = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.Adam([parameter], lr=2e-4, betas=(0.0, 0.9))
    make_capturable(optimizer, device)
    lr = optimizer.param_groups[0]["lr"]
    assert isinstance(lr, torch.Tensor) and optimizer.param_groups[0]["capturable"]
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 - step / 4)
    for step in range(1, 4):
        scheduler.step()
        # the same tensor, updated in place: a captured update reads the new value on replay
        assert optimizer.param_groups[0]["lr"] is lr and float(lr) == pytest.approx(2e-4 * (1 - step / 4))
    saved = optimizer.state_dict()
    plain = torch.optim.Adam([parameter], lr=2e-4, betas=(0.0, 0.9))
    plain.state["step"] = {}
    plain.load_state_dict(saved)
    make_capturable(plain, device)
    group = plain.param_groups[0]
    assert group["capturable"] and isinstance(group["lr"], torch.Tensor) and float(group["lr"]) == pytest.approx(5e-5)


def test_a_run_that_cannot_capture_says_why(tmp_path):
    with pytest.raises(GnPluginError, match=r"^train\.cuda_graph: needs a CUDA device"):
        recipe_training(tmp_path, "cifar10/cnn", "gn", cuda_graph=True)
    with pytest.raises(GnPluginError, match=r"^train\.cuda_graph: supports one process, and this run has 2"):
        check_cuda_graph(torch.device("cuda", 0), world_size=2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA-graph capture needs a GPU")
@pytest.mark.parametrize("recipe, method", [("cifar10/cnn", "gn-cr"), ("cifar10/resnet", "gn"), ("cifar10/cnn", "wgan-gp")])
def test_a_captured_d_step_trains_like_the_eager_one(tmp_path, recipe, method):
    def run(name: str, cuda_graph: bool) -> list[dict]:
        config = smoke_config(
            RECIPES / recipe / f"{method}.yaml", inception=write_stand_in_inception(tmp_path / "inception.pt"),
            cache_dir=tmp_path / "cache", steps=12, width=0.25, batch=16, device="cuda",
        )
        config.train.log_every, config.train.lr_decay, config.train.cuda_graph = 1, "linear", cuda_graph
        train(config, tmp_path / name, progress=False)
        return [json.loads(line) for line in RunFiles(tmp_path / name).scalars.read_text().splitlines()]

    eager, captured = run("eager", False), run("captured", True)
    assert len(captured) == len(eager) == 12
    for a, b in zip(eager, captured):  # the same draws and arithmetic; only cuDNN's summation order may differ
        assert b["lr/d"] == pytest.approx(a["lr/d"], rel=1e-6)
        for name in (n for n in a if n.startswith("loss/")):
            assert b[name] == pytest.approx(a[name], rel=1e-3, abs=1e-4), (a["step"], name)
