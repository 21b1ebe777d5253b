"""Progress a user sees: one bar over every bench run's steps, a bar while evaluating, perf's estimate first."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml

from gn_plugin.cli import main
from gn_plugin.config import EvalConfig
from gn_plugin.evaluation.evaluator import Evaluator
from gn_plugin.experiments import bench, perf
from gn_plugin.experiments import spec as bench_spec
from gn_plugin.registry import create

DIGITS = Path(__file__).resolve().parents[1] / "yaml_configs" / "digits"


def tiny_cells(folder: Path, steps: int = 6) -> list[bench_spec.Cell]:
    spec = {"name": "p", "base": str(DIGITS / "_recipe.yaml"), "set": {"train.steps": steps, "train.log_every": 2},
            "methods": {"gn": {"norm": "gn"}, "sn": {"norm": "sn"}}, "seeds": [0, 1]}
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    _, cells = bench_spec.prepare(path, folder / "out", [])
    return cells


def write_scalars(cell: bench_spec.Cell, steps: list[int], tail: str = "") -> None:
    cell.run_dir.mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps({"step": s, "loss/d": 0.5}) + "\n" for s in steps)
    cell.files.scalars.write_text(lines + tail)


def test_steps_done_reads_the_last_logged_step_of_each_run(tmp_path):
    fresh, logging, finished, _ = tiny_cells(tmp_path)
    assert bench.steps_done(fresh) == 0
    write_scalars(logging, [2, 4], tail='{"step": 6, "loss/d"')  # a line still being written is skipped
    assert bench.steps_done(logging) == 4
    finished.files.root.mkdir(parents=True)
    finished.files.summary.write_text("{}")
    assert bench.steps_done(finished) == 6


def test_run_cells_shows_one_bar_over_all_steps_and_a_line_per_finished_run(tmp_path, monkeypatch, capsys):
    cells = tiny_cells(tmp_path)

    def fake_train(command, **kwargs):  # a child that logs its steps and finishes
        cell = next(c for c in cells if str(c.config_path) in command or str(c.run_dir) in command)
        write_scalars(cell, [2, 4, 6])
        cell.files.summary.write_text("{}")
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(bench.subprocess, "run", fake_train)
    lines: list[str] = []
    assert bench.run_cells(cells, jobs=2, log=lines.append, progress=True) == []
    assert sorted(line.split("] ")[1].split(":")[0] for line in lines) == sorted(c.id for c in cells)
    bar = capsys.readouterr().err.replace("\r", "\n").splitlines()
    assert any("24/24" in line and "4 runs" in line and "4/4 runs done" in line for line in bar), bar[-3:]


def test_evaluation_shows_a_bar_over_its_samples_when_asked(tmp_path, capsys):
    dataset = create("dataset", "digits")
    settings = EvalConfig(num_samples=100, batch_size=50, metrics=["fid"], cache_dir=str(tmp_path))
    quiet = Evaluator(dataset, settings)
    quiet.evaluate(lambda n: dataset.images[:n])
    assert capsys.readouterr().err == ""
    shown = Evaluator(dataset, settings, progress=True)
    shown.evaluate(lambda n: dataset.images[:n], label="evaluating ema")
    assert "evaluating ema" in capsys.readouterr().err


def test_the_floor_shows_a_bar_over_its_draws_and_says_where_it_is_cached(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GN_PLUGIN_CACHE", str(tmp_path / "cache"))
    dataset = create("dataset", "digits")
    settings = EvalConfig(num_samples=64, batch_size=64, metrics=["fid"], cache_dir=str(tmp_path))
    assert len(Evaluator(dataset, settings).resampled_floor(3)) == 3 and "floor" not in capsys.readouterr().err
    Evaluator(dataset, settings, progress=True).resampled_floor(3)
    err = capsys.readouterr().err
    assert "real-vs-real floor" in err and "3/3" in err
    spec = {"name": "f", "base": str(DIGITS / "_recipe.yaml"), "methods": {"gn": {"norm": "gn"}, "sn": {"norm": "sn"}},
            "set": {"eval.num_samples": 64, "eval.batch_size": 64, "eval.metrics": ["fid"]}}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    _, cells = bench_spec.prepare(tmp_path / "spec.yaml", tmp_path / "out", [])
    lines: list[str] = []
    bench.compute_floors(cells[:1], log=lines.append)
    (line,) = lines
    assert line.startswith("real-vs-real floor of digits: 20 draws of ") and str(tmp_path / "cache" / "floors") in line
    bench.compute_floors(cells, log=lines.append)  # every cell shares that floor, now cached: nothing to say
    assert len(lines) == 1


def test_perf_estimates_the_rest_from_one_warm_up_iteration_per_variant():
    prepared = perf.Prepared("cnn32", [], [], warmup_seconds={"fp32/sn": 1.0, "fp32/gn": 2.0})
    # a memory pass per variant (3 s) plus three repetitions of both (9 s), a sync count more on CUDA
    assert perf.remaining_seconds(prepared, reps=3, time_limit=None, cuda=False) == 12.0
    assert perf.remaining_seconds(prepared, reps=3, time_limit=None, cuda=True) == 15.0
    # a time limit stops new repetitions once passed: at most one repetition beyond it
    assert perf.remaining_seconds(prepared, reps=3, time_limit=4.0, cuda=False) == 3.0 + 7.0


def test_perf_prints_its_plan_and_estimate_before_measuring(capsys):
    tiny = ["model.width=0.0625", "train.batch_size_d=2", "train.batch_size_g=2"]
    assert main(["perf", "--device", "cpu", "--groups", "fp32", "--reps", "1", "--set", *tiny]) == 0
    captured = capsys.readouterr()
    first, second = captured.err.splitlines()[:2]
    assert first.startswith("gnbench perf --device cpu --models cnn32 --groups fp32 --reps 1 --warmup 1 --time-limit 60")
    assert "5 variants" in first and second.startswith("estimated duration: about ")
    assert "| cnn32 | 1 | 2 / 2 | fp32 | gn |" in captured.out  # the CPU default measures cnn32 only

