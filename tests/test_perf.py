"""The performance work keeps every number: fused CR pass, device-side batches, bf16 bound; ``gnbench perf`` runs.

Timings are never asserted here; they live in docs/performance.md with how they were measured.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from gn_plugin import create
from gn_plugin.cli import main
from gn_plugin.errors import GnPluginError
from gn_plugin.experiments import perf
from gn_plugin.experiments.perf import CUDA_ONLY_GROUPS, GROUPS, TensorMemory
from gn_plugin.experiments.smoke import RECIPES, smoke_config, write_stand_in_inception
from gn_plugin.norms.gradnorm import normalize_gradient
from gn_plugin.training.data_stream import DeviceBatchIndices, batch_indices
from gn_plugin.training.loop import train
from gn_plugin.training.run_dir import RunFiles
from gn_plugin.training.steps import float32_precision


def scaled_discriminator(model: str, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    torch.manual_seed(0)
    discriminator = create("model", model, width=0.25).discriminator.to(dtype)
    for p in discriminator.parameters():
        p.data.mul_(3)  # push f and ∇f away from the trivial regime
    return discriminator


# -- GN-CR's augmented view in the D step's one GN pass --------------------------------------------
def d_step_loss(wrapper, regularizer, real, fake, *, fused: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(adversarial, CR term) as train.discriminator_step computes them, fused or in separate passes."""
    torch.manual_seed(7)  # the augmentation's draws
    if fused:
        real_scores, fake_scores, augmented_scores = wrapper(torch.cat([real, fake, regularizer.augment(real)])).split(len(real))
        term = regularizer.from_scores(real_scores, augmented_scores)
    else:
        real_scores, fake_scores = wrapper(torch.cat([real, fake])).split(len(real))
        term = regularizer(wrapper, real=real, fake=fake, real_scores=real_scores)
    return F.softplus(-real_scores).mean() + F.softplus(fake_scores).mean(), term


@pytest.mark.parametrize("model", ["cnn32", "resnet32"])
def test_fused_consistency_pass_gives_the_separate_passes_numbers(model):
    for dtype in (torch.float32, torch.float64):
        wrapper = create("norm", "gn-cr", scaled_discriminator(model, dtype))
        (regularizer,) = wrapper.implied_regularizers
        real, fake = torch.rand(2, 6, 3, 32, 32, dtype=dtype) * 2 - 1
        results = {}
        for fused in (False, True):
            wrapper.zero_grad()
            adversarial, term = d_step_loss(wrapper, regularizer, real, fake, fused=fused)
            (adversarial + term).backward()
            results[fused] = (adversarial.detach(), term.detach(), [p.grad.clone() for p in wrapper.parameters()])
        (a0, t0, g0), (a1, t1, g1) = results[False], results[True]
        assert t0 > 0
        # Per-sample GN: the scores, hence both loss terms, are bit-identical ...
        assert torch.equal(a0, a1) and torch.equal(t0, t1)
        # ... and the weight gradients differ only by the order of the batch sums.
        for x, y in zip(g0, g1):
            tolerance = {"rtol": 1e-4, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-10, "atol": 1e-13}
            torch.testing.assert_close(y, x, **tolerance)


# -- no host sync for batches: the device-side index stream is the host one ------------------------
@pytest.mark.parametrize("position", [0, 7, 23])
@pytest.mark.parametrize("shard", [slice(None), slice(0, 2), slice(2, 4)])
def test_device_batch_indices_equal_the_index_stream(position, shard):
    host = batch_indices(10, 4, 3, position, shard)
    device = DeviceBatchIndices(10, 4, 3, position, shard, torch.device("cpu"))
    for _ in range(12):  # several epochs; batches straddle epoch ends
        assert next(device).tolist() == next(host)


# -- bf16 autocast keeps GN's guarantees -----------------------------------------------------------
@pytest.mark.parametrize("model", ["cnn32", "resnet32"])
def test_bf16_autocast_keeps_gn_bounded_and_1_lipschitz(model):
    discriminator = scaled_discriminator(model)
    x = (torch.rand(32, 3, 32, 32) * 2 - 1).requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert discriminator(x).dtype == torch.bfloat16  # the convolutions do run in bf16
        normalized, raw = normalize_gradient(discriminator, x, return_raw=True)
    assert normalized.dtype == raw.dtype == torch.float32  # norm and division in float32
    assert bool((normalized.abs() < 1).all())
    (grad,) = torch.autograd.grad(normalized.sum(), x)
    norms = grad.flatten(1).norm(dim=1)
    # Theorem 6: ‖∇ₓf̂‖ = (‖∇f‖ / (‖∇f‖ + |f|))² = (1 − |f̂|)² ≤ 1, up to bf16 rounding (2⁻⁸ relative)
    assert bool((norms <= 1 + 2**-6).all()), norms.max()
    torch.testing.assert_close(norms, (1 - normalized.detach().abs()) ** 2, rtol=2**-6, atol=0)


# -- the optimisations that claim exactness leave training's numbers alone -------------------------
def short_run(tmp_path, name: str, method: str, **train_options) -> list[dict]:
    """Six steps of the CIFAR-10 CNN recipe on fake data, narrow; the logged scalars of every step."""
    config = smoke_config(
        RECIPES / "cifar10" / "cnn" / f"{method}.yaml", inception=write_stand_in_inception(tmp_path / "inception.pt"),
        cache_dir=tmp_path / "cache", steps=6, width=0.125, batch=8, device="cpu",
    )
    config.train.log_every = 1
    for key, value in train_options.items():
        setattr(config.train, key, value)
    train(config, tmp_path / name, progress=False)
    return [json.loads(line) for line in RunFiles(tmp_path / name).scalars.read_text().splitlines()]


def test_training_losses_do_not_change_with_the_exact_optimisations(tmp_path):
    optimised = short_run(tmp_path, "optimised", "gn-cr")
    plain = short_run(
        tmp_path, "plain", "gn-cr", cheap_discriminator_step="off", cheap_generator_step="off", fuse_consistency=False
    )
    losses = [name for name in optimised[0] if name.startswith("loss/")]
    assert {"loss/d", "loss/g", "loss/gn-cr:ConsistencyRegularizer"} <= set(losses)
    assert all(optimised[0][name] == plain[0][name] for name in losses if name != "loss/g")  # the first D step
    for a, b in zip(optimised, plain):  # then float rounding of the weight-gradient sums only
        for name in losses:
            assert a[name] == pytest.approx(b[name], rel=1e-4, abs=1e-6), (a["step"], name)


def test_bf16_and_channels_last_train_on_cpu(tmp_path):
    reference = short_run(tmp_path, "reference", "gn")
    nhwc = short_run(tmp_path, "nhwc", "gn", channels_last=True)
    bf16 = short_run(tmp_path, "bf16", "gn", precision="bf16", channels_last=True)
    for a, b in zip(reference, nhwc):  # the same arithmetic in another memory order
        assert a["loss/d"] == pytest.approx(b["loss/d"], rel=1e-4)
    assert all(abs(row["loss/d"] - reference[i]["loss/d"]) < 0.05 for i, row in enumerate(bf16))
    assert max(row["lipschitz/grad_norm_max"] for row in bf16) <= 1 + 1e-5


def tf32_flags() -> tuple[bool, bool]:
    return torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32


def test_tf32_is_set_for_the_iteration_only_and_only_when_asked():
    before = tf32_flags()
    for precision, tf32 in (("fp32", False), ("tf32", True), ("bf16", False)):
        t = SimpleNamespace(device=torch.device("cuda"), config=SimpleNamespace(train=SimpleNamespace(precision=precision)))
        with float32_precision(t):  # only flags: runs without a GPU
            assert tf32_flags() == (tf32, tf32)
        assert tf32_flags() == before


# -- measuring ---------------------------------------------------------------------------------------
def test_tensor_memory_counts_new_storages_while_alive():
    existing = torch.zeros(1000)
    with TensorMemory() as memory:
        a = torch.ones(250_000)  # 1 MB
        b = a * 2
        del b
        c = a + 1
        a.view(500, 500).add_(1)  # views and in-place results allocate nothing
        existing.mul_(2)
        assert memory.live == memory.peak == 2_000_000
        del a, c
        assert memory.live == 0 and memory.peak == 2_000_000


def test_perf_command_writes_its_table_into_the_docs_page(tmp_path, capsys):
    page = tmp_path / "performance.md"
    page.write_text("# Performance\n\nProse stays.\n\n<!-- perf:cpu -->\nold table\n<!-- /perf:cpu -->\n\nMore prose.\n")
    cpu_groups = [g for g in GROUPS if g not in CUDA_ONLY_GROUPS]
    argv = ["perf", "--device", "cpu", "--models", "cnn32", "--groups", *cpu_groups, "--reps", "2",
            "--warmup", "1", "--set", "model.width=0.0625", "train.batch_size_d=2", "train.batch_size_g=2",
            "--write-docs", str(page), "--json", str(tmp_path / "perf.json")]
    assert main(argv) == 0
    text = page.read_text()
    assert text.startswith("# Performance\n\nProse stays.") and text.endswith("<!-- /perf:cpu -->\n\nMore prose.\n")
    assert "old table" not in text and "gnbench perf --device cpu --models cnn32" in text
    rows = json.loads((tmp_path / "perf.json").read_text())["rows"]
    assert [(r["group"], r["method"]) for r in rows] == [(g, m) for g in cpu_groups for m in GROUPS[g][0]]
    assert all(len(r["seconds"]) == 2 and r["peak_bytes"] > 0 for r in rows)
    assert rows[1]["ratio_to_sn"] == 1.0
    assert "| cnn32 (n_dis 1): gn time / sn time |" in text and "| cnn32 | 1 | 2 / 2 | fp32 | gn |" in text


def test_a_variant_that_cannot_run_is_reported_and_the_others_are_measured(monkeypatch, capsys):
    def setup_failing_for_gn(config, *args):
        if config.norm.name == "gn":
            raise GnPluginError("train.cuda_graph: capturing the D step failed (stand-in)")
        return perf_setup(config, *args)

    perf_setup = perf.setup
    monkeypatch.setattr(perf, "setup", setup_failing_for_gn)
    tiny = ["model.width=0.0625", "train.batch_size_d=2", "train.batch_size_g=2"]
    variants = perf.measure_model("cnn32", ["fp32"], device="cpu", reps=1, warmup=0, overrides=tiny, time_limit=None)
    assert [v.method for v in variants if v.error] == ["gn"]
    assert all(len(v.seconds) == 1 for v in variants if v.method != "gn")
    table = perf.markdown(variants, torch.device("cpu"), "gnbench perf", 0)
    assert "Not measured: cnn32 *fp32* gn (train.cuda_graph: capturing the D step failed (stand-in))." in table
    assert "| cnn32 | 1 | 2 / 2 | fp32 | gn |" not in table and "| cnn32 | 1 | 2 / 2 | fp32 | sn |" in table


def test_cuda_only_settings_are_refused_on_the_cpu(capsys):
    assert main(["perf", "--device", "cpu", "--groups", "cuda-graph"]) == 2
    assert capsys.readouterr().err.strip().endswith("--groups cuda-graph: needs --device cuda")
