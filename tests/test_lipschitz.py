"""``gnbench lipschitz``: the Theorem-5 experiment end to end at toy size, and its summaries."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import yaml

from gn_plugin import GnPluginError
from gn_plugin.experiments import lipschitz, report

RECIPE = Path(__file__).resolve().parents[1] / "yaml_configs" / "digits" / "_recipe.yaml"
TINY = {
    "loss": "wasserstein", "train.steps": 4, "train.batch_size_d": 16, "train.batch_size_g": 16,
    "train.log_every": 2, "train.checkpoint_every": 4, "eval.every": 0, "eval.num_samples": 64,
    "eval.batch_size": 64, "eval.metrics": ["fid"],
}


def write_spec(folder: Path, **fields) -> Path:
    spec = {
        "name": "lip", "base": str(RECIPE), "set": TINY, "methods": {"gn": {"norm": "gn"}, "sn": {"norm": "sn"}},
        "grid": {"model.options.depth": [1, 2]}, "docs": str(folder / "docs" / "lip.md"), **fields,
    }
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_experiment_trains_measures_plots_and_writes_its_page(tmp_path):
    written = lipschitz.run_lipschitz(write_spec(tmp_path), jobs=2, out=tmp_path / "out", points=32)
    assert {p.name for p in written} == {"lipschitz.csv", "cost.csv", "lipschitz.png", "lip.md"}
    with open(tmp_path / "out" / "lipschitz.csv") as file:
        rows = list(csv.DictReader(file))
    assert sorted((r["method"], r["x"]) for r in rows) == [("gn", "1"), ("gn", "2"), ("sn", "1"), ("sn", "2")]
    for row in rows:
        kinds = [float(row[k]) for k in lipschitz.POINT_KINDS]
        assert float(row["lipschitz"]) == max(kinds) > 0
        if row["method"] == "gn":  # Theorem 6: a piecewise-linear D under GN is 1-Lipschitz at every point
            assert float(row["lipschitz"]) <= 1 + 1e-5
            assert float(row["raw_lipschitz"]) != pytest.approx(float(row["lipschitz"]))
        else:  # SN's wrapper scores with the raw (spectrally normalized) network itself
            assert float(row["raw_lipschitz"]) == pytest.approx(float(row["lipschitz"]))
    page = (tmp_path / "docs" / "lip.md").read_text()
    assert "| gn | 1 |" in page and "| sn | 2 |" in page and "Theorem 5" in page
    assert (tmp_path / "docs" / "lip" / "lipschitz.png").stat().st_size > 0
    # The page is a function of the data published next to it (and the spec).
    folder = tmp_path / "docs" / "lip"
    data = [report.read_csv(folder / name) for name in lipschitz.DATA_FILES]
    assert lipschitz.page_text(*data, tmp_path / "spec.yaml", "lip") == page
    assert "[lipschitz.csv](lip/lipschitz.csv)" in page and "| 4 trained | 2 |" in page  # the cost row: 4 runs, 2 jobs


def test_the_spec_must_vary_exactly_one_key(tmp_path):
    path = write_spec(tmp_path, grid={"model.options.depth": [1], "model.width": [1.0]})
    with pytest.raises(GnPluginError, match="varies exactly one key"):
        lipschitz.run_lipschitz(path, out=tmp_path / "out", print_commands=True)


def test_summaries_of_fabricated_estimates():
    rows = [
        {"method": "sn", "x": 1, "seed": 0, "lipschitz": 0.8, "real": 0.8, "fake": 0.5, "interpolated": 0.7, "raw_lipschitz": 0.8},
        {"method": "sn", "x": 1, "seed": 1, "lipschitz": 0.6, "real": 0.6, "fake": 0.4, "interpolated": 0.5, "raw_lipschitz": 0.6},
        {"method": "sn", "x": 4, "seed": 0, "lipschitz": 0.2, "real": 0.2, "fake": 0.1, "interpolated": 0.2, "raw_lipschitz": 0.2},
    ]
    assert lipschitz.summarize(rows, "lipschitz") == {"sn": {1: (pytest.approx(0.7), 0.6, 0.8), 4: (0.2, 0.2, 0.2)}}
    assert "| sn | 1 | 0.700 (0.600–0.800) | 0.700 / 0.450 / 0.600 | 0.700 |" in lipschitz.results_table(rows, "depth")
    assert lipschitz.findings(rows, "depth") == (
        "- **sn**: 0.700 at depth 1, 0.200 at depth 4 (range 0.200 to 0.700; 0.29× from the shallowest to the deepest)."
    )
