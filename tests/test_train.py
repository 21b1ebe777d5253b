"""The training loop end to end on CPU: learning, exact resume (also after SIGKILL), divergence, errors."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from gn_plugin.cli import main
from gn_plugin.config import load_config
from gn_plugin.registry import register, registry
from gn_plugin.training import checkpoint
from gn_plugin.training.build import build_dataset, build_models
from gn_plugin.training.loop import train
from gn_plugin.training.run_dir import RunFiles
from gn_plugin.training.state import TrainingDiverged

from run_weights import assert_same_weights, weights

DIGITS = Path(__file__).resolve().parents[1] / "yaml_configs" / "digits"
GNBENCH = [sys.executable, "-m", "gn_plugin.cli"]


def quick(method: str = "gn", *extra: str, steps: int = 20):
    """A digits recipe shortened for tests."""
    return load_config(
        DIGITS / f"{method}.yaml",
        [f"train.steps={steps}", "train.batch_size_d=32", "train.batch_size_g=32", "train.log_every=5",
         "train.sample_every=10", "train.checkpoint_every=5", "train.device=cpu", "eval.every=0",
         "eval.num_samples=200", "eval.batch_size=200", "model.width=0.5", *extra],
    )


def digits():
    return build_dataset(quick("gn"))


def test_gn_on_digits_learns_and_writes_its_run_files(tmp_path):
    config = quick("gn", "eval.every=150", "eval.num_samples=500", "eval.batch_size=500", steps=450)
    summary = train(config, tmp_path / "run", progress=False)
    files = RunFiles(tmp_path / "run")
    ema = [r["fid"] for r in files.read_results() if r["generator"] == "ema"]
    raw = [r["fid"] for r in files.read_results() if r["generator"] == "raw"]
    assert len(ema) == len(raw) == 3
    assert ema[-1] < ema[0] and raw[-1] < raw[0], (raw, ema)  # FID goes down as GN-GAN trains
    # Both records of an evaluation carry its wall time so far and the train speed since the last one.
    timings = [(r["step"], r["wall_time_s"], r["train_steps_per_s"]) for r in files.read_results()]
    assert timings[0::2] == timings[1::2] and all(speed > 0 for _, _, speed in timings)
    assert [wall for _, wall, _ in timings[0::2]] == sorted({wall for _, wall, _ in timings})
    assert timings[-1][1] <= summary["wall_time_s"]
    assert summary["cheap_generator_step"] is True
    assert files.best_checkpoint.exists() and summary["best"]["value"] == min(ema)
    assert load_config(files.config) == config  # the resolved config reproduces the run
    logged = [line for line in files.scalars.read_text().splitlines()]
    assert len(logged) == 450 // 5
    assert '"lipschitz/grad_norm_max"' in logged[0] and '"scores_raw/real_mean"' in logged[0]
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    assert (files.samples / "step_0000450.png").exists()


@pytest.mark.parametrize("method", ["gn-cr", "sn", "wgan-gp"])
def test_resumed_run_equals_uninterrupted_run(tmp_path, method):
    # hflip and the regularizers' random draws exercise every RNG a checkpoint must carry.
    straight = quick(method, "data.hflip=true", steps=20)
    train(straight, tmp_path / "straight", progress=False)
    train(quick(method, "data.hflip=true", steps=10), tmp_path / "split", progress=False)
    resumed = load_config(tmp_path / "split" / "config.yaml", ["train.steps=20"])
    train(resumed, tmp_path / "split", resume=True, progress=False)
    assert_same_weights(tmp_path / "straight", tmp_path / "split")
    walls = [r["wall_time_s"] for r in RunFiles(tmp_path / "split").read_results()]
    assert walls == sorted(walls) and walls[0] < walls[-1]  # the clock continues across the resume


def test_train_mode_evaluation_changes_no_training_state_and_resumes_exactly(tmp_path):
    """Evaluations every 5 steps sample G in train mode (its BatchNorm on batch statistics); the weights,
    buffers included, equal a run evaluated only at its end, interrupted and resumed at step 10."""
    evaluated = quick("gn", "eval.every=5", "eval.generator_mode=train", steps=20)
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in build_models(evaluated, digits()).generator.modules())
    train(evaluated, tmp_path / "evaluated", progress=False)
    assert [r["step"] for r in RunFiles(tmp_path / "evaluated").read_results()] == [5, 5, 10, 10, 15, 15, 20, 20]
    train(quick("gn", "eval.generator_mode=train", steps=10), tmp_path / "split", progress=False)
    resumed = load_config(tmp_path / "split" / "config.yaml", ["train.steps=20"])
    train(resumed, tmp_path / "split", resume=True, progress=False)
    assert_same_weights(tmp_path / "evaluated", tmp_path / "split")
    def last_metrics(run: str) -> list[dict]:  # the timing fields are the clock's, not the run's
        return [{k: v for k, v in r.items() if k not in ("wall_time_s", "train_steps_per_s")}
                for r in RunFiles(tmp_path / run).read_results() if r["step"] == 20]

    assert last_metrics("evaluated") == last_metrics("split")


def test_run_killed_with_sigkill_resumes_to_identical_weights(tmp_path):
    config_path = tmp_path / "config.yaml"
    overrides = ["--set", "train.steps=600", "train.checkpoint_every=25", "train.log_every=50", "train.sample_every=600",
                 "train.device=cpu", "eval.every=0", "eval.num_samples=100", "eval.batch_size=100", "model.width=0.5"]
    config_path.write_text(f"base: {DIGITS / 'gn.yaml'}\n")
    killed = tmp_path / "killed"
    process = subprocess.Popen([*GNBENCH, "train", str(config_path), "--out", str(killed), "--no-progress", *overrides],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    latest = RunFiles(killed).latest_checkpoint
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if latest.exists() and checkpoint.load(latest)["step"] >= 100:
            break
        time.sleep(0.05)
    assert process.poll() is None, "the run finished before it could be killed"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    step_at_kill = checkpoint.load(latest)["step"]
    assert 100 <= step_at_kill < 600

    resumed = subprocess.run([*GNBENCH, "train", str(killed), "--resume", "--no-progress"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    straight = subprocess.run([*GNBENCH, "train", str(config_path), "--out", str(tmp_path / "straight"), "--no-progress",
                               *overrides], capture_output=True, text=True)
    assert straight.returncode == 0, straight.stderr
    assert checkpoint.load(latest)["step"] == 600
    assert_same_weights(killed, tmp_path / "straight")
    records = [(r["step"], r["generator"]) for r in RunFiles(killed).read_results()]
    assert records == [(600, "raw"), (600, "ema")]  # an evaluation from before the kill is never duplicated


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(tmp_path):
    @register("loss", "nan-after-12-test")
    class NanAfter12:
        calls = 0

        def d_loss(self, real, fake):
            NanAfter12.calls += 1
            value = torch.nn.functional.softplus(-real).mean() + torch.nn.functional.softplus(fake).mean()
            return value * float("nan") if NanAfter12.calls > 12 else value

        def g_loss(self, fake):
            return torch.nn.functional.softplus(-fake).mean()

    try:
        config = quick("gn", "loss=nan-after-12-test", "train.log_every=1", steps=30)
        with pytest.raises(TrainingDiverged) as error:
            train(config, tmp_path / "run", progress=False)
    finally:
        registry("loss").unregister("nan-after-12-test")
    message = str(error.value)
    assert "at step 13" in message and "NaN or infinite" in message and "latest.pt (step 10)" in message
    state = checkpoint.load(RunFiles(tmp_path / "run").latest_checkpoint)
    assert state["step"] == 10
    assert all(torch.isfinite(v).all() for v in state["generator"].values() if v.is_floating_point())


def test_cli_reports_user_mistakes_in_one_line_and_exits_2(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"base: {DIGITS / 'gn.yaml'}\ntrain:\n  stepz: 3\n")
    cases = {
        ("train", str(tmp_path / "missing.yaml")): "config file not found",
        ("train", str(bad)): "train.stepz: unknown key",
        ("train", str(DIGITS / "gn.yaml"), "--set", "norm=gm"): "unknown norm 'gm'; did you mean 'gn'?",
        ("train", str(DIGITS / "gn.yaml"), "--set", "train.lr_d=-1"): "train.lr_d: Input should be greater than 0",
        ("eval", str(tmp_path)): "is not a run directory",
        ("train", str(tmp_path / "nothing"), "--resume"): "config file not found",
    }
    for argv, expected in cases.items():
        assert main(list(argv)) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and expected in err, (argv, err)


def test_new_run_never_overwrites_an_existing_one(tmp_path, capsys):
    run = tmp_path / "run"
    train(quick("gn", steps=5), run, progress=False)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    argv = ["train", str(DIGITS / "gn.yaml"), "--out", str(run), "--set", "train.steps=5", "eval.every=0"]
    assert main(argv) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert before == {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}


def test_sample_and_eval_commands_use_the_saved_run(tmp_path, capsys):
    run = tmp_path / "run"
    train(quick("sn", steps=10), run, progress=False)
    grid = tmp_path / "grid.png"
    assert main(["sample", str(run), "--out", str(grid), "--count", "16"]) == 0
    assert grid.stat().st_size > 0
    assert main(["eval", str(run), "--checkpoint", "latest", "--set", "eval.num_samples=100", "eval.generator_mode=eval"]) == 0
    records = RunFiles(run).read_results()
    assert [r["generator"] for r in records[-2:]] == ["raw", "ema"] and records[-1]["checkpoint"] == "latest"
    assert (records[-1]["eval_mode"], records[-1]["generator_mode"]) == ("clean", "eval")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_equal_one_process_with_the_same_global_batch(tmp_path):
    # G without BatchNorm: BN statistics are per process, like DDP without SyncBatchNorm.
    config_path = tmp_path / "config.yaml"
    config_path.write_text(f"base: {DIGITS / 'gn.yaml'}\nmodel:\n  options:\n    generator_batchnorm: false\n")
    overrides = ["--set", "train.steps=8", "train.batch_size_d=16", "train.batch_size_g=16", "train.device=cpu",
                 "train.log_every=4", "eval.every=0", "eval.num_samples=64", "eval.batch_size=64", "data.hflip=true"]
    single = subprocess.run([*GNBENCH, "train", str(config_path), "--out", str(tmp_path / "one"), "--no-progress", *overrides],
                            capture_output=True, text=True)
    assert single.returncode == 0, single.stderr
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
                "--master_addr=127.0.0.1", "-m", "gn_plugin.cli"]
    double = subprocess.run([*launcher, "train", str(config_path), "--out", str(tmp_path / "two"), "--no-progress", *overrides],
                            capture_output=True, text=True, env=env)
    assert double.returncode == 0, double.stderr[-3000:]
    one, two = weights(tmp_path / "one"), weights(tmp_path / "two")
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-5, msg=key)
    assert (tmp_path / "two" / "summary.json").read_text().count('"world_size": 2') == 1


def test_a_stateful_norms_buffers_are_saved_in_checkpoints_and_restored_on_resume(tmp_path):
    from gn_plugin.norms.base import ScoreWrapper

    class CountingNorm(ScoreWrapper):
        """Counts the images it scores in training: state kept in a registered buffer."""

        def __init__(self, discriminator):
            super().__init__(discriminator)
            self.register_buffer("scored", torch.zeros((), dtype=torch.long))

        def forward(self, x, y=None):
            if self.training:
                self.scored += x.shape[0]
            return super().forward(x, y)

    register("norm", "counting")(CountingNorm)
    try:
        train(quick("gn", "norm=counting", steps=6), tmp_path / "straight", progress=False)
        train(quick("gn", "norm=counting", steps=3), tmp_path / "resumed", progress=False)
        halfway = checkpoint.load(RunFiles(tmp_path / "resumed").latest_checkpoint)["discriminator"]["scored"]
        train(quick("gn", "norm=counting", steps=6), tmp_path / "resumed", resume=True, progress=False)
    finally:
        registry("norm").unregister("counting")
    straight = checkpoint.load(RunFiles(tmp_path / "straight").latest_checkpoint)["discriminator"]["scored"]
    resumed = checkpoint.load(RunFiles(tmp_path / "resumed").latest_checkpoint)["discriminator"]["scored"]
    assert 0 < int(halfway) < int(straight)
    assert int(resumed) == int(straight)  # the resumed run counted on from the saved buffer, not from zero
