"""``gnbench bench``: matrix expansion, skipping, printed commands, aggregation and the report files.

Unit tests build cells and fabricated run directories; one module-scoped end-to-end benchmark
(2 methods x 2 seeds, 4 steps each, 2 parallel ``gnbench train`` processes) backs the rest.
"""

from __future__ import annotations

import csv
import itertools
import json
import shlex
import statistics
from pathlib import Path

import pytest
import yaml

from gn_plugin import GnPluginError
from gn_plugin.cli import main
from gn_plugin.config import config_from_dict, load_config, save_config
from gn_plugin.experiments import bench, invocations, report
from gn_plugin.experiments import spec as bench_spec

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "yaml_configs" / "digits"
TINY = {
    "train.steps": 4, "train.batch_size_d": 16, "train.batch_size_g": 16, "train.log_every": 2,
    "train.sample_every": 4, "train.checkpoint_every": 4, "eval.every": 2, "eval.num_samples": 64,
    "eval.batch_size": 64,
}


def write_spec(folder: Path, **fields) -> Path:
    """A spec in ``folder`` on the digits recipe (absolute base), tiny budget unless overridden."""
    spec = {"name": "t", "base": str(RECIPES / "_recipe.yaml"), "set": dict(TINY), **fields}
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def flatten(data, prefix=""):
    if isinstance(data, dict) and data:
        return {k: v for key, value in data.items() for k, v in flatten(value, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): data}


def differing_keys(a, b) -> set[str]:
    fa, fb = flatten(a.config.to_dict()), flatten(b.config.to_dict())
    return {key.split(".")[0] if key.split(".")[0] in bench_spec.COMPONENT_KEYS else key
            for key in set(fa) | set(fb) if fa.get(key) != fb.get(key)}


# -- expansion -------------------------------------------------------------------------------------
def test_expansion_shares_everything_but_the_varied_keys(tmp_path):
    path = write_spec(
        tmp_path,
        methods={
            "gn": {"norm": "gn"},
            "wgan-gp": {"norm": "none", "loss": "wasserstein", "regularizers": [{"name": "gp", "weight": 10.0}]},
            "sn": str(RECIPES / "sn.yaml"),
        },
        grid={"model.options.depth": [1, 2]},
        seeds=[0, 1],
    )
    cells = bench_spec.expand(bench_spec.load_spec(path), path, tmp_path / "out")
    assert len(cells) == 3 * 2 * 2
    assert len({c.id for c in cells}) == len(cells)
    assert all(c.config.train.steps == 4 for c in cells)  # `set` reaches every cell
    for a in cells:
        for b in cells:
            allowed = set()
            if a.seed != b.seed:
                allowed.add("train.seed")
            if a.variant != b.variant:
                allowed.add("model.options.depth")
            if a.method != b.method:
                allowed |= set(bench_spec.COMPONENT_KEYS)
            assert differing_keys(a, b) <= allowed, (a.id, b.id)
    assert {c.config.train.seed for c in cells} == {0, 1}
    assert [c.seed for c in cells[:6]] == [0] * 6  # seed-major: every method's first seed runs first
    wgan = next(c for c in cells if c.method == "wgan-gp")
    assert (wgan.config.norm.name, wgan.config.loss.name, wgan.config.regularizers[0].name) == ("none", "wasserstein", "gp")
    assert next(c for c in cells if c.method == "sn").config.norm.name == "sn"  # from the recipe file
    assert cells[0].group == "gn (depth=1)" and cells[0].id == "gn__depth-1__seed0"


def test_method_components_replace_the_base_wholesale(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text(f"base: {RECIPES / '_recipe.yaml'}\nnorm: {{name: gn-cr, consistency_weight: 3.0}}\n")
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "base": "base.yaml", "methods": {"sn": {"norm": "sn"}, "cr": {}}}, sort_keys=False))
    sn, cr = bench_spec.expand(bench_spec.load_spec(path), path, tmp_path)
    assert (sn.config.norm.name, sn.config.norm.options) == ("sn", {})
    assert cr.config.norm.options == {"consistency_weight": 3.0}


def test_grid_alone_gives_a_cross_product_of_components(tmp_path):
    path = write_spec(tmp_path, grid={"norm": ["gn", "sn"], "loss": ["hinge", "ns"]})
    cells = bench_spec.expand(bench_spec.load_spec(path), path, tmp_path)
    assert sorted((c.config.norm.name, c.config.loss.name) for c in cells) == [
        ("gn", "hinge"), ("gn", "ns"), ("sn", "hinge"), ("sn", "ns")
    ]
    assert cells[0].group == "norm=gn, loss=hinge"


@pytest.mark.parametrize(
    "fields, expected",
    [
        ({"metods": {}}, "spec.yaml: metods: unknown key"),
        ({"seeds": [1, 1]}, "spec.yaml: seeds: seeds must be distinct"),
        ({"methods": {"x": {"norm": "gnn"}}}, "method 'x', seed 0): norm: unknown norm 'gnn'; did you mean 'gn'?"),
        ({"set": {"train.steps": 0}}, "train.steps: Input should be greater than 0"),
        ({"metrics": ["fdi"]}, "spec.yaml: metrics: unknown metric 'fdi'; did you mean 'fid'?"),
    ],
)
def test_bad_specs_are_one_line_errors_naming_the_key(tmp_path, fields, expected):
    path = write_spec(tmp_path, **fields)
    with pytest.raises(GnPluginError) as error:
        bench_spec.expand(bench_spec.load_spec(path), path, tmp_path)
    assert expected in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("spec", sorted((REPO / "yaml_configs" / "bench").glob("*.yaml")), ids=lambda p: p.stem)
def test_the_shipped_specs_expand_to_valid_configs(spec, tmp_path):
    loaded = bench_spec.load_spec(spec)
    cells = bench_spec.expand(loaded, spec, tmp_path)
    assert len(cells) == len(loaded.seeds) * max(1, len(loaded.methods)) * len(list(itertools.product(*loaded.grid.values())))


def test_cli_reports_a_missing_spec_in_one_line(capsys):
    assert main(["bench", "no/such/spec.yaml"]) == 2
    assert capsys.readouterr().err.strip() == "gnbench: error: config file not found: no/such/spec.yaml"


def test_a_finished_run_with_another_config_is_refused(tmp_path):
    path = write_spec(tmp_path, methods={"gn": {"norm": "gn"}})
    (cell,) = bench_spec.expand(bench_spec.load_spec(path), path, tmp_path / "out")
    cell.run_dir.mkdir(parents=True)
    save_config(config_from_dict({**cell.config.to_dict(), "train": {**cell.config.to_dict()["train"], "steps": 9}}), cell.files.config)
    with pytest.raises(GnPluginError, match=r"was run with train.steps=9 but the spec now gives 4"):
        bench_spec.prepare(path, tmp_path / "out", None)


def test_each_parallel_job_gets_its_gpu_or_its_share_of_the_cpu(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(bench, "visible_gpus", list)
    monkeypatch.setattr(bench, "cpu_cores", lambda: 8)
    assert [env["OMP_NUM_THREADS"] for env in bench.job_environments(4)] == ["2"] * 4
    monkeypatch.setattr(bench, "visible_gpus", lambda: ["3", "5"])
    assert [env["CUDA_VISIBLE_DEVICES"] for env in bench.job_environments(3)] == ["3", "5", "3"]
    assert bench.resolve_jobs("auto") == 2 and bench.resolve_jobs(1) == 1


# -- aggregation from fabricated runs ---------------------------------------------------------------
def test_aggregate_gives_mean_and_sample_std_over_seeds():
    rows = [
        {"method": "gn", "status": "finished", "best_fid": 1.0, "final_fid": 2.0, "wall_time_s": 10.0},
        {"method": "gn", "status": "finished", "best_fid": 2.0, "final_fid": 3.0, "wall_time_s": 20.0},
        {"method": "gn", "status": "finished", "best_fid": 6.0, "final_fid": 7.0, "wall_time_s": None},
        {"method": "gn", "status": "unfinished"},
        {"method": "sn", "status": "finished", "best_fid": 4.0, "final_fid": 5.0, "wall_time_s": 5.0},
    ]
    gn, sn = report.aggregate(rows, report.stat_columns(["fid"]))
    assert (gn["method"], gn["n"], gn["runs"]) == ("gn", 3, 4)
    assert gn["best_fid"] == (3.0, pytest.approx(statistics.stdev([1.0, 2.0, 6.0])))
    assert gn["wall_time_s"] == (15.0, pytest.approx(statistics.stdev([10.0, 20.0])))
    assert gn["steps_per_s"] == (None, None)
    assert sn["best_fid"] == (4.0, None)  # one seed: no std
    table = report.results_table([gn, sn], [{"metrics": {"fid": 0.5}}], ["fid"])
    assert "| gn | 3 of 4 | **3.00 ± 2.6** | **4.00 ± 2.6** | 15.0 ± 7.1 | – |" in table
    assert "| sn | 1 | 4.00 | 5.00 | 5.00 | – |" in table
    assert "| *real-vs-real floor* | – | 0.500 | 0.500 | – | – |" in table
    notes = report.reading_notes([gn, sn], [{"metrics": {"fid": 0.5}}])
    assert "    - gn vs sn: **not separated** (1.00 ≤ 2.65)" in notes
    assert "- Mean final FID: gn (4.00) < sn (5.00)." in notes


def fabricate_run(cell: bench_spec.Cell, fids: dict[int, float], speeds: list[float]) -> None:
    """A finished run directory: EMA and raw evaluations, a summary and logged speeds."""
    files = cell.files
    cell.run_dir.mkdir(parents=True)
    save_config(cell.config, files.config)
    for step, fid in fids.items():
        files.append_result({"step": step, "generator": "raw", "fid": 0.1, "kid": 0.0, "is": 9.0})
        files.append_result({"step": step, "generator": "ema", "fid": fid, "kid": fid / 10, "is": 10 - fid})
    files.append_result({"step": 4, "generator": "ema", "checkpoint": "best", "fid": 0.0})  # a later `gnbench eval`
    files.close()
    files.write_summary({"steps": max(fids), "wall_time_s": 12.0, "best": {}})
    files.scalars.write_text("".join(json.dumps({"step": i, "speed/steps_per_s": s}) + "\n" for i, s in enumerate(speeds)))


def test_rows_pick_the_best_and_final_evaluation_of_the_reported_generator(tmp_path):
    path = write_spec(tmp_path, methods={"gn": {"norm": "gn"}}, seeds=[0, 1])
    first, second = bench_spec.expand(bench_spec.load_spec(path), path, tmp_path / "out")
    fabricate_run(first, {2: 5.0, 4: 3.0, 6: 4.0}, [10.0, 1.0, 30.0])
    row = report.run_row(first, ["fid", "kid", "is"])
    assert row["status"] == "finished" and row["generator"] == "ema"
    assert (row["best_step"], row["best_fid"], row["best_kid"], row["best_is"]) == (4, 3.0, 0.3, 7.0)
    assert (row["final_step"], row["final_fid"]) == (6, 4.0)
    assert row["steps_per_s"] == 10.0 and row["wall_time_s"] == 12.0
    assert report.run_row(second, ["fid"])["status"] == "unfinished"


# -- end to end --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def finished_bench(tmp_path_factory):
    """A 2-method x 2-seed benchmark run for real with 2 parallel jobs, and its log lines."""
    folder = tmp_path_factory.mktemp("bench")
    path = write_spec(
        folder, methods={"gn": {"norm": "gn"}, "none": {"norm": "none"}}, seeds=[0, 1],
        docs=str(folder / "docs" / "results" / "tiny.md"),
    )
    lines: list[str] = []
    written = bench.run_benchmark(path, jobs=2, out=folder / "out", log=lines.append)
    return path, folder / "out", written, lines


def test_benchmark_runs_every_cell_and_writes_the_report(finished_bench):
    path, out, written, lines = finished_bench
    cells = bench_spec.expand(bench_spec.load_spec(path), path, out)
    assert all(cell.finished for cell in cells), lines
    assert {p.name for p in written} >= {"results.csv", "results.md", "curves.png", "samples.png", "tiny.md"}
    assert all(p.stat().st_size > 0 for p in written)
    with open(out / "results.csv") as file:
        rows = list(csv.DictReader(file))
    assert sorted((r["method"], r["seed"]) for r in rows) == [("gn", "0"), ("gn", "1"), ("none", "0"), ("none", "1")]
    markdown = (out / "results.md").read_text()
    for text in ("| gn | 2 |", "| none | 2 |", "real-vs-real floor", "EMA"):
        assert text in markdown
    page = Path(bench_spec.load_spec(path).docs)
    assert "| gn | 2 |" in page.read_text() and (page.parent / "tiny" / "curves.png").is_file()
    (record,) = invocations.read_invocations(out)
    assert (record["executed"], record["skipped"], record["jobs"]) == (4, 0, 2)


def test_a_second_invocation_skips_finished_cells(finished_bench):
    path, out, _, _ = finished_bench
    summaries = sorted(out.glob("runs/*/summary.json"))
    stamps = [p.stat().st_mtime_ns for p in summaries]
    lines: list[str] = []
    bench.run_benchmark(path, jobs=2, out=out, log=lines.append)
    assert lines[0] == f"4 runs in {out}: 4 finished, 0 to run, 2 at a time"
    assert [p.stat().st_mtime_ns for p in summaries] == stamps
    assert len(invocations.read_invocations(out)) == 1  # nothing ran, nothing recorded


def test_print_commands_prints_runnable_train_commands(finished_bench, capsys, tmp_path):
    path, _, _, _ = finished_bench
    out = tmp_path / "cluster"
    assert bench.run_benchmark(path, out=out, print_commands=True) == []
    commands = [shlex.split(line) for line in capsys.readouterr().out.splitlines()]
    assert len(commands) == 4 and all(c[:2] == ["gnbench", "train"] for c in commands)
    assert not list(out.glob("runs/*"))  # printing ran nothing
    assert main(commands[0][1:]) == 0
    (cell,) = [c for c in bench_spec.expand(bench_spec.load_spec(path), path, out) if c.finished]
    assert load_config(cell.files.config).to_dict() == cell.config.to_dict()
