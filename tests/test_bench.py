"""``gnbench bench``: matrix expansion, skipping, printed commands, aggregation and the report files.

Unit tests build cells and fabricated run directories; one module-scoped end-to-end benchmark
(2 methods x 2 seeds, 4 steps each, 2 parallel ``gnbench train`` processes) backs the rest.
"""

from __future__ import annotations

import csv
import itertools
import json
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats as scipy_stats

from gn_plugin import GnPluginError
from gn_plugin.cli import main
from gn_plugin.config import config_from_dict, load_config, save_config
from gn_plugin.experiments import bench, invocations, pages, report, tables
from gn_plugin.experiments import spec as bench_spec
from gn_plugin.experiments.statistics import compare_all, holm, seeds_needed

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
        ({"primary": {"metric": "kid"}, "metrics": ["fid"]}, "spec.yaml: primary.metric: 'kid' is not one of the spec's metrics (fid)"),
        ({"primary": {"stage": "best"}}, "spec.yaml: primary.stage: 'best' is chosen on the same evaluations it reports"),
        ({"primary": {"generator": "both"}}, "spec.yaml: primary.generator: Input should be 'raw' or 'ema'"),
        ({"primary": {"margin": -1}}, "spec.yaml: primary.margin: Input should be greater than 0"),
        ({"primary": {"metrik": "fid"}}, "spec.yaml: primary.metrik: unknown key; did you mean 'metric'?"),
        ({"paper": {"source": "x", "metrics": ["is"], "values": {}}, "metrics": ["fid"]}, "spec.yaml: paper.metrics: 'is' is not one of"),
    ],
)
def test_bad_specs_are_one_line_errors_naming_the_key(tmp_path, fields, expected):
    path = write_spec(tmp_path, **fields)
    with pytest.raises(GnPluginError) as error:
        bench_spec.prepare(path, tmp_path, None)
    assert expected in str(error.value) and "\n" not in str(error.value)


def test_paper_numbers_must_name_methods_of_the_spec(tmp_path):
    path = write_spec(tmp_path, methods={"gn": {"norm": "gn"}}, paper={"source": "x", "metrics": ["fid"], "values": {"sn": "1"}})
    with pytest.raises(GnPluginError, match=r"spec.yaml: paper.values: 'sn' is not a method of this spec \(gn\)$"):
        bench_spec.prepare(path, tmp_path / "out", None)


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


# -- rows, statistics and comparisons from fabricated runs ------------------------------------------
def fabricate_run(cell: bench_spec.Cell, fids: dict[int, float], speeds: list[float], walls: list[float] | None = None) -> None:
    """A finished run directory: EMA and raw evaluations (with wall times), a summary and logged speeds."""
    files = cell.files
    cell.run_dir.mkdir(parents=True)
    save_config(cell.config, files.config)
    walls = walls or [10.0 * (i + 1) for i in range(len(fids))]
    for (step, fid), wall in zip(fids.items(), walls):
        timing = {"wall_time_s": wall, "train_steps_per_s": 50.0}
        files.append_result({"step": step, "generator": "raw", **timing, "fid": fid + 1, "kid": 0.0, "is": 9.0 - step})
        files.append_result({"step": step, "generator": "ema", **timing, "fid": fid, "kid": fid / 10, "is": 10 - fid})
    files.append_result({"step": 4, "generator": "ema", "checkpoint": "best", "fid": 0.0})  # a later `gnbench eval`
    files.close()
    files.write_summary({"steps": max(fids), "wall_time_s": walls[-1] + 2.0, "best": {}})
    files.scalars.write_text("".join(json.dumps({"step": i, "speed/steps_per_s": s}) + "\n" for i, s in enumerate(speeds)))


def test_rows_give_each_generator_its_best_final_and_equal_time_evaluation(tmp_path):
    path = write_spec(tmp_path, methods={"fast": {"norm": "none"}, "slow": {"norm": "gn"}}, seeds=[0, 1])
    fast0, slow0, fast1, slow1 = bench_spec.expand(bench_spec.load_spec(path), path, tmp_path / "out")
    fabricate_run(fast0, {2: 5.0, 4: 3.0, 6: 4.0}, [10.0, 1.0, 30.0], walls=[10.0, 20.0, 30.0])
    fabricate_run(fast1, {2: 5.0, 4: 3.0, 6: 4.0}, [10.0], walls=[11.0, 22.0, 33.0])
    fabricate_run(slow0, {2: 6.0, 4: 2.0, 6: 1.0}, [10.0], walls=[20.0, 40.0, 60.0])
    # T: the fast method's slowest seed reached its last evaluation after 33 s; the slow one is cut there.
    limit = report.time_limit([fast0, slow0, fast1, slow1])
    assert limit == 33.0
    ema, raw = report.run_rows(fast0, ["fid", "kid", "is"], limit)
    assert (ema["generator"], raw["generator"]) == ("ema", "raw") and ema["status"] == "finished"
    assert (ema["best_step"], ema["best_fid"], ema["best_kid"], ema["best_is"]) == (4, 3.0, 0.3, 7.0)
    assert (ema["final_step"], ema["final_fid"]) == (6, 4.0)
    assert (ema["equal_time_step"], ema["equal_time_fid"], ema["time_limit_s"]) == (4, 3.0, 33.0)
    assert ema["steps_per_s"] == 10.0 and ema["wall_time_s"] == 32.0
    assert (raw["best_step"], raw["best_fid"], raw["best_is"]) == (4, 4.0, 5.0)  # raw's own best evaluation
    slow_ema, _ = report.run_rows(slow0, ["fid"], limit)
    assert (slow_ema["best_step"], slow_ema["equal_time_step"], slow_ema["equal_time_fid"]) == (6, 2, 6.0)
    assert [r["status"] for r in report.run_rows(slow1, ["fid"], limit)] == ["unfinished", "unfinished"]
    assert report.time_limit([fast0]) == 30.0 and report.time_limit([slow1]) is None


def test_comparisons_are_holm_adjusted_within_each_metric_generator_and_stage():
    rng = np.random.default_rng(0)
    means = {"a": 1.0, "b": 1.5, "c": 1.6}
    rows = [
        {"method": m, "generator": g, "status": "finished", "best_fid": float(v + rng.normal(0, 0.1)),
         "final_fid": float(v + rng.normal(0, 0.1)), "equal_time_fid": None, "best_is": float(10 - v + rng.normal(0, 0.1))}
        for m, v in means.items() for g in ("ema", "raw") for _ in range(4)
    ]
    rows.append({"method": "c", "generator": "ema", "status": "unfinished"})
    primary = report.Primary("fid", "raw", "final", 0.5)
    found = report.comparisons(rows, ["fid", "is"], primary=primary)
    families = {(c["metric"], c["generator"], c["stage"]) for c in found}
    # No values at equal time: no family; final IS was not recorded either.
    assert families == {(m, g, s) for m in ("fid",) for g in ("ema", "raw") for s in ("best", "final")} | {
        ("is", g, "best") for g in ("ema", "raw")
    }
    # The primary family comes first, alone labelled primary, alone tested for equivalence.
    assert [(c["family"], c["metric"], c["generator"], c["stage"]) for c in found[:3]] == [("primary", "fid", "raw", "final")] * 3
    assert all(c["family"] == "exploratory" and c["margin"] is None and c["tost_p"] is None for c in found[3:])
    assert all(c["margin"] == 0.5 and c["tost_p"] is not None for c in found[:3])
    for key in families:
        family = [c for c in found if (c["metric"], c["generator"], c["stage"]) == key]
        assert [(c["method_a"], c["method_b"]) for c in family] == [("a", "b"), ("a", "c"), ("b", "c")]
        assert [c["p_holm"] for c in family] == pytest.approx(holm([c["p_value"] for c in family]))
        for c in family:
            a = report.values_by_method(rows, key[1], f"{key[2]}_{key[0]}")[c["method_a"]]
            b = report.values_by_method(rows, key[1], f"{key[2]}_{key[0]}")[c["method_b"]]
            assert c["p_value"] == pytest.approx(scipy_stats.ttest_ind(a, b, equal_var=False).pvalue)
            assert (c["n_a"], c["n_b"]) == (len(a), len(b)) == (4, 4)  # the unfinished run does not count
            if c["p_holm"] >= 0.05:
                assert c["verdict"] in ("inconclusive", "equivalent")
            else:
                a_better = (c["mean_a"] < c["mean_b"]) == (key[0] == "fid")
                assert c["verdict"] == f"{c['method_a'] if a_better else c['method_b']} better"
            # Seeds needed at Holm's strictest level, alpha / (pairs in the family), beyond the 4 seeds run.
            assert c["seeds_needed"] == seeds_needed(a, b, alpha=0.05 / 3, more_than=4)
        # a is far ahead on both metrics (lower FID, higher IS): decided in a's favour.
        assert family[0]["verdict"] == family[1]["verdict"] == "a better"
    # b and c differ by one standard deviation: four seeds each cannot decide that.
    bc = next(c for c in found if (c["metric"], c["generator"], c["stage"], c["method_a"]) == ("fid", "ema", "best", "b"))
    assert bc["verdict"] == "inconclusive" and bc["seeds_needed"] > 4


def built_report(spec_path: Path, cells: list[bench_spec.Cell], floors: dict, root: Path) -> report.BenchReport:
    """The report of fabricated runs, through the published files, as the bench builds it."""
    spec = bench_spec.load_spec(spec_path)
    root.mkdir(parents=True, exist_ok=True)
    report.write_data(report.collect(spec, cells, floors, root), root)
    return report.analyse(spec, cells, report.read_data(root))


FLOOR = {"data": "digits", "space": "digits", "images": 64, "training_images": 1437,
         "draws": [{"fid": 0.1 + 0.01 * i} for i in range(5)], "context": {"kind": "held_out", "images": 64, "metrics": {"fid": 0.3}}}


def test_cells_that_differ_only_in_their_models_share_one_floor(tmp_path):
    grid = {"model.options.activation": ["leaky_relu", "elu", "softplus"]}
    path = write_spec(tmp_path, methods={"a": {"norm": "none"}, "b": {"norm": "gn"}}, grid=grid, seeds=[0, 1])
    cells = bench_spec.expand(bench_spec.load_spec(path), path, tmp_path / "out")
    keys = {bench_spec.floor_key(c.config) for c in cells}
    assert len(cells) == 12 and len(keys) == 1  # the floor scores real images: the D activation cannot matter
    other = write_spec(tmp_path, set={**TINY, "data.resolution": 16})
    (bigger,) = bench_spec.expand(bench_spec.load_spec(other), other, tmp_path / "other")
    assert bench_spec.floor_key(bigger.config) not in keys  # another image size is another floor
    chooser = write_spec(tmp_path, set={**TINY, "eval.best_generator": "raw", "eval.every": 1, "eval.generator_mode": "eval"})
    (same,) = bench_spec.expand(bench_spec.load_spec(chooser), chooser, tmp_path / "chooser")
    assert bench_spec.floor_key(same.config) in keys  # which generator is chosen, or how it is sampled, is not the floor's
    samples = write_spec(tmp_path, set={**TINY, "eval.num_samples": 32})
    (fewer,) = bench_spec.expand(bench_spec.load_spec(samples), samples, tmp_path / "fewer")
    assert bench_spec.floor_key(fewer.config) not in keys  # the sample count is

    for cell in cells:  # six groups with the same two FIDs: 15 pairs, none decided
        fabricate_run(cell, {2: 3.0 + 0.5 * cell.config.train.seed}, [10.0])
    built = built_report(path, cells, {keys.pop(): FLOOR}, tmp_path / "out")
    assert len(report.floors_of(built)) == 1
    text = tables.report_body(built)
    assert text.count("*floor: 64 training images*") == 3  # the headline table and the FID table of each generator
    assert "**0 of 15 pairs decided**" in text and "The spec states no equivalence margin" in text


def test_one_factor_compares_only_cells_that_differ_in_one_factor_and_holm_adjusts_over_those(tmp_path):
    grid = {"model.options.activation": ["leaky_relu", "elu", "softplus"]}
    methods = {"a": {"norm": "none"}, "b": {"norm": "gn"}}
    path = write_spec(tmp_path, methods=methods, grid=grid, seeds=[0, 1, 2], compare="one_factor")
    spec = bench_spec.load_spec(path)
    cells = bench_spec.expand(spec, path, tmp_path / "out")
    pairs = report.compared_pairs(cells, spec.compare)
    # 2 methods x 3 activations: 3 pairs of activations per method and one pair of methods per activation.
    assert len(pairs) == 2 * 3 + 3 < 15 and report.compared_pairs(cells, "all") is None
    for a, b in pairs:
        fa, fb = (dict(next(c for c in cells if c.group == g).factors) for g in (a, b))
        assert sum(fa[k] != fb[k] for k in fa) == 1
    rng = np.random.default_rng(1)
    for i, cell in enumerate(cells):
        fabricate_run(cell, {2: 1.0 + 0.3 * (i % 6) + float(rng.normal(0, 0.05))}, [10.0])
    built = built_report(path, cells, {}, tmp_path / "out")
    family = built.primary_family
    assert (built.primary.metric, built.primary.generator, built.primary.stage) == ("fid", "ema", "final")
    assert [(c["method_a"], c["method_b"]) for c in family] == pairs
    assert [c["p_holm"] for c in family] == pytest.approx(holm([c["p_value"] for c in family]))
    with pytest.raises(GnPluginError, match="compare"):
        bench_spec.load_spec(write_spec(tmp_path, compare="within"))


def test_generated_sentences_follow_the_data(tmp_path):
    """The verdict, equivalence, trend and floor sentences say what the rows say, and change with them."""
    path = write_spec(tmp_path, methods={"gn": {"norm": "gn"}, "sn": {"norm": "sn"}, "none": {"norm": "none"}},
                      seeds=[0, 1, 2, 3], primary={"metric": "fid", "generator": "ema", "margin": 0.3})
    cells = bench_spec.expand(bench_spec.load_spec(path), path, tmp_path / "out")
    for cell in cells:
        seed = cell.config.train.seed
        if cell.method == "gn":  # still falling, far worse
            fids = {2: 9.0, 4: 6.0 + 0.1 * seed}
        elif cell.method == "sn":  # rose at the end, close to none
            fids = {2: 1.0, 4: 1.2 + 0.01 * seed}
        else:
            fids = {2: 1.5, 4: 1.21 + 0.01 * seed}
        fabricate_run(cell, fids, [10.0])
    built = built_report(path, cells, {bench_spec.floor_key(cells[0].config): FLOOR}, tmp_path / "out")
    lines = tables.primary_section(built)
    assert "**2 of 3 pairs decided**" in lines
    assert "Better: sn than gn; none than gn." in lines
    assert "Equivalent within ±0.3 (two one-sided Welch tests, Holm over the 3 pairs): sn vs none." in lines
    trend = tables.trend_sentence(built)
    assert trend.startswith(
        "Between step 2 and step 4, the mean FID of the EMA generator (the seeds that improved in brackets) was "
        "still falling for gn (9.00 → 6.15, 4 of 4 seeds)"
    )
    assert "not falling for sn (1.00 → 1.21, 0 of 4 seeds) and none" not in trend  # none fell
    assert "not falling for sn (1.00 → 1.21, 0 of 4 seeds)" in trend and "none (1.50 → 1.23, 4 of 4 seeds)" in trend
    floor = tables.floor_sentences(built)
    assert floor[0].startswith("Real training images at the generated sample count score FID 0.120 [")
    assert "the best mean, sn's 1.21, is 10.1× that." in floor[0]
    assert floor[1] == "The 64 held-out images score 0.300; none of the 12 runs does better."


def test_a_run_shorter_than_a_few_ema_horizons_is_flagged(tmp_path):
    def cells(steps: int) -> list[bench_spec.Cell]:
        path = write_spec(tmp_path, set={**TINY, "train.steps": steps, "train.ema.decay": 0.999, "train.ema.start": 0})
        return bench_spec.expand(bench_spec.load_spec(path), path, tmp_path / "out")

    assert tables.ema_warnings(cells(3000)) == []
    (warning,) = tables.ema_warnings(cells(2999))
    assert "runs of 2999 steps" in warning and "3.0 EMA horizons" in warning and "1000 steps" in warning


# -- end to end --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def finished_bench(tmp_path_factory):
    """A 2-method x 2-seed benchmark run for real with 2 parallel jobs, its log lines and its floor cache."""
    folder = tmp_path_factory.mktemp("bench")
    path = write_spec(
        folder, methods={"gn": {"norm": "gn"}, "none": {"norm": "none"}}, seeds=[0, 1],
        docs=str(folder / "docs" / "results" / "tiny.md"), metrics=["fid", "precision", "coverage"],
        description="What this benchmark compares.\n\n## Budget\n\nWhy these steps and seeds.\n",
        primary={"metric": "fid", "generator": "raw", "margin": 5.0}, validate_metrics=True,
    )
    lines: list[str] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GN_PLUGIN_CACHE", str(folder / "cache"))
        written = bench.run_benchmark(path, jobs=2, out=folder / "out", log=lines.append)
    return path, folder / "out", written, lines


def test_benchmark_runs_every_cell_and_writes_the_report(finished_bench):
    path, out, written, lines = finished_bench
    cells = bench_spec.expand(bench_spec.load_spec(path), path, out)
    assert all(cell.finished for cell in cells), lines
    assert {p.name for p in written} >= {
        "results.csv", "curves.csv", "floor.csv", "cost.csv", "summary.csv", "comparisons.csv", "results.md",
        "curves.png", "samples.png", "tiny.md", "metric_validation.csv", "metric_monotonicity.csv", "memorisation.csv",
    }
    assert all(p.stat().st_size > 0 for p in written)
    # validate_metrics: every degradation at every strength and draw, the primary generator of every run checked
    scored = read_csv(out / "metric_validation.csv")
    assert {r["degradation"] for r in scored} == {"noise", "blur", "drop_classes", "copies"}
    assert {"fid", "precision", "coverage"} <= set(scored[0]) and {r["images"] for r in scored} == {"64"}
    checked = [r for r in read_csv(out / "memorisation.csv") if r["method"] != "held-out images"]
    assert sorted((r["method"], r["run"], r["space"]) for r in checked) == [
        (m, f"{m}__seed{s}", space) for m in ("gn", "none") for s in (0, 1) for space in ("features", "pixels")
    ] and {r["generator"] for r in checked} == {"raw"}
    rows = read_csv(out / "results.csv")
    assert sorted((r["method"], r["seed"], r["generator"]) for r in rows) == [
        (m, s, g) for m in ("gn", "none") for s in ("0", "1") for g in ("ema", "raw")
    ]
    assert {"best_precision", "final_coverage", "equal_time_fid", "time_limit_s"} <= set(rows[0])
    with open(out / "comparisons.csv") as file:
        assert next(csv.reader(file)) == [
            "family", "metric", "generator", "stage", "method_a", "method_b", "n_a", "n_b", "mean_a", "mean_b", "diff",
            "ci_low", "ci_high", "p_value", "p_holm", "margin", "tost_p", "tost_p_holm", "prob_improvement",
            "seeds_needed", "verdict",
        ]
    comparisons = read_csv(out / "comparisons.csv")
    assert {(c["metric"], c["generator"], c["stage"]) for c in comparisons} == {
        (m, g, s) for m in ("fid", "precision", "coverage") for g in ("ema", "raw") for s in ("best", "final", "equal_time")
    }
    assert comparisons[0]["family"] == "primary" and (comparisons[0]["metric"], comparisons[0]["generator"]) == ("fid", "raw")
    draws = [r for r in read_csv(out / "floor.csv") if r["kind"] == "draw"]
    assert len(draws) == bench.FLOOR_DRAWS and {r["images"] for r in draws} == {str(TINY["eval.num_samples"])}
    assert any(line.startswith("real-vs-real floor of digits: 20 draws of 64 images") for line in lines)
    markdown = (out / "results.md").read_text()
    for text in ("raw generator:\n\n| method | seeds | final |", "| none | 2 |", "*floor: 64 training images* | 20 draws", "**Warning:**",
                 "## Primary comparison", "**FID ↓ of the raw generator at the final evaluation (step 4)**",
                 "| gn vs none |", "best within T", "!!! warning \"Exploratory\""):
        assert text in markdown, text
    page = Path(bench_spec.load_spec(path).docs).read_text()
    assert "| gn | 2 |" in page and (Path(bench_spec.load_spec(path).docs).parent / "tiny" / "curves.png").is_file()
    # Results first: the description's introduction, then the results, its sections only after them.
    assert page.index("What this benchmark compares.") < page.index("## Primary comparison") < page.index("## Budget")
    assert page.index("## Samples") < page.index("## Do the metrics rank known degradations?") < page.index("## Memorisation")
    assert "| [memorisation.csv](tiny/memorisation.csv) |" in page
    (record,) = invocations.read_invocations(out)
    assert (record["executed"], record["skipped"], record["jobs"], record["stopped"]) == (4, 0, 2, None)


def test_the_docs_page_is_a_function_of_its_published_files(finished_bench, tmp_path):
    """The page rebuilt from the files next to it (and the spec) is the page; a changed value changes it."""
    path, out, _, _ = finished_bench
    spec = bench_spec.load_spec(path)
    page = Path(spec.docs)
    folder = page.parent / page.stem
    cells = bench_spec.expand(spec, path, out)
    rebuilt = pages.docs_page_text(report.analyse(spec, cells, report.read_data(folder)), path, page.stem)
    assert rebuilt == page.read_text()
    copy = tmp_path / "data"
    shutil.copytree(folder, copy)
    rows = (copy / "results.csv").read_text().splitlines()
    header = rows[0].split(",")
    first = rows[1].split(",")
    first[header.index("final_fid")] = "123.5"
    (copy / "results.csv").write_text("\n".join([rows[0], ",".join(first), *rows[2:]]) + "\n")
    changed = pages.docs_page_text(report.analyse(spec, cells, report.read_data(copy)), path, page.stem)
    assert changed != rebuilt
    found = (copy / "memorisation.csv").read_text().replace(",False", ",True")  # every run flagged
    (copy / "memorisation.csv").write_text(found)
    flagged = pages.docs_page_text(report.analyse(spec, cells, report.read_data(copy)), path, page.stem)
    assert "features: flagged: gn (raw, 2 of 2 runs), none (raw, 2 of 2 runs)." in flagged


def test_the_floor_is_cached_across_output_folders_and_keyed_by_what_it_depends_on(finished_bench, tmp_path, monkeypatch):
    path, out, _, _ = finished_bench
    cache = out.parent / "cache"
    (cached,) = (cache / "floors").glob("*.json")
    monkeypatch.setenv("GN_PLUGIN_CACHE", str(cache))

    def recompute(*args, **kwargs):
        raise AssertionError("the floor was computed again")

    cells = bench_spec.expand(bench_spec.load_spec(path), path, tmp_path / "another-out")
    with monkeypatch.context() as patch:
        patch.setattr(bench.Evaluator, "resampled_floor", recompute)
        (floor,) = bench.compute_floors(cells, log=lambda line: None).values()  # a new output folder: from the cache
    assert floor == json.loads(cached.read_text())
    other = write_spec(tmp_path, set={**TINY, "eval.num_samples": 32})
    fewer = bench_spec.expand(bench_spec.load_spec(other), other, tmp_path / "fewer")
    (smaller,) = bench.compute_floors(fewer, log=lambda line: None).values()  # another sample count: computed
    assert smaller["images"] == 32 and len(list((cache / "floors").glob("*.json"))) == 2
    cached.write_text('{"format": 3, "dra')  # a damaged cache file is computed again
    (again,) = bench.compute_floors(cells, log=lambda line: None).values()
    assert again == floor and json.loads(cached.read_text()) == floor


def test_comparisons_csv_is_recomputed_from_results_csv(finished_bench):
    """Anyone can recompute comparisons.csv from results.csv: group its rows, run the statistics, compare."""
    _, out, _, _ = finished_bench
    rows, written = read_csv(out / "results.csv"), read_csv(out / "comparisons.csv")
    recomputed = []
    families = [("fid", "raw", "final")] + [
        (m, g, s) for m in ("fid", "precision", "coverage") for g in ("ema", "raw") for s in ("final", "best", "equal_time")
        if (m, g, s) != ("fid", "raw", "final")
    ]
    for metric, generator, stage in families:
        groups = {}
        for row in rows:
            if row["generator"] == generator and row["status"] == "finished" and row[f"{stage}_{metric}"]:
                groups.setdefault(row["method"], []).append(float(row[f"{stage}_{metric}"]))
        primary = (metric, generator, stage) == ("fid", "raw", "final")
        for c in compare_all(groups, lower_is_better=metric == "fid", margin=5.0 if primary else None):
            recomputed.append({"family": "primary" if primary else "exploratory", "metric": metric,
                               "generator": generator, "stage": stage, **c.as_row()})
    assert len(recomputed) == len(written) == 18
    for ours, theirs in zip(recomputed, written):
        for column, value in ours.items():
            if isinstance(value, float):
                assert float(theirs[column]) == pytest.approx(value, rel=1e-12, abs=1e-15), column
            else:
                assert theirs[column] == ("" if value is None else str(value)), column


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path) as file:
        return list(csv.DictReader(file))


def test_a_second_invocation_skips_finished_cells(finished_bench, monkeypatch):
    path, out, _, _ = finished_bench
    monkeypatch.setenv("GN_PLUGIN_CACHE", str(out.parent / "cache"))
    summaries = sorted(out.glob("runs/*/summary.json"))
    stamps = [p.stat().st_mtime_ns for p in summaries]
    lines: list[str] = []
    bench.run_benchmark(path, jobs=2, out=out, log=lines.append)
    assert lines[0] == f"4 runs in {out}: 4 finished, 0 to run, 2 at a time"
    assert [p.stat().st_mtime_ns for p in summaries] == stamps
    assert not any(line.startswith("scoring degraded real images") for line in lines)  # reused, not scored again
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


def test_validate_metrics_needs_a_held_out_split_before_any_cell_runs(tmp_path, monkeypatch):
    path = write_spec(tmp_path, methods={"gn": {"norm": "gn"}}, validate_metrics=True)
    monkeypatch.setattr(bench, "held_out_split", lambda config, dataset: None)  # a data set without a test split
    with pytest.raises(GnPluginError, match=r"^cell gn__seed0: validate_metrics: data set 'digits' has no held-out split"):
        bench.run_benchmark(path, jobs=1, out=tmp_path / "out", log=lambda line: None)
    assert not (tmp_path / "out" / "runs").exists()
