"""The published results pages: each is rebuilt from the data published next to it and must match it
exactly, and every hand-written sentence of a spec that states a result is checked against that data.

A page without its data fails (it is never skipped): regenerate it with the command the failure names.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from gn_plugin.evaluation.evaluator import evaluation_sampler
from gn_plugin.evaluation.features import sampled_batches
from gn_plugin.experiments import lipschitz, pages, report
from gn_plugin.experiments.spec import expand, load_spec, output_root
from gn_plugin.experiments.tables import sampling_note
from gn_plugin.training.build import build_dataset, build_models

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "docs" / "results"
BENCH = REPO / "yaml_configs" / "bench"
LIPSCHITZ = BENCH / "lipschitz.yaml"


def spec_of(page: Path) -> Path:
    """The shipped spec that writes ``page``."""
    for path in sorted(BENCH.glob("*.yaml")):
        if load_spec(path).docs == page.relative_to(REPO).as_posix():
            return path
    raise AssertionError(f"{page.relative_to(REPO)}: no spec in yaml_configs/bench writes this page")


def command(spec: Path) -> str:
    tool = "lipschitz" if spec == LIPSCHITZ else "bench"
    return f"gnbench {tool} {spec.relative_to(REPO).as_posix()}"


PAGES = sorted(p for p in RESULTS.glob("*.md") if p.name != "index.md")


def published(page: Path, names: tuple[str, ...]) -> Path:
    """The page's data folder; fails, naming the command that writes it, when a file is missing."""
    folder = page.parent / page.stem
    missing = [name for name in names if not (folder / name).is_file()]
    if missing:
        pytest.fail(
            f"{page.relative_to(REPO)}: its data ({', '.join(missing)}) is not published in "
            f"{folder.relative_to(REPO)}/; regenerate the page with `{command(spec_of(page))}`"
        )
    return folder


def bench_report(page: Path) -> report.BenchReport:
    spec_path = spec_of(page)
    folder = published(page, (*report.DATA_FILES, *report.DERIVED_FILES))
    spec = load_spec(spec_path)
    return report.analyse(spec, expand(spec, spec_path, output_root(spec)), report.read_data(folder))


def first_difference(expected: str, actual: str) -> str:
    for number, (a, b) in enumerate(zip(expected.splitlines(), actual.splitlines()), 1):
        if a != b:
            return f"line {number}:\n  page:    {a[:200]}\n  rebuilt: {b[:200]}"
    return f"lengths differ: {len(expected.splitlines())} and {len(actual.splitlines())} lines"


def test_every_results_page_comes_from_a_shipped_spec():
    assert {p.stem for p in PAGES} >= {"digits", "ablation-formulation", "ablation-activation", "lipschitz"}
    for page in PAGES:
        spec_of(page)


@pytest.fixture(autouse=True)
def in_the_checkout(monkeypatch):
    """Pages name their spec by its path in the checkout, as the commands that write them are run there."""
    monkeypatch.chdir(REPO)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.stem)
def test_the_page_is_rebuilt_exactly_from_its_published_data(page):
    spec_path = spec_of(page)
    if spec_path == LIPSCHITZ:
        folder = published(page, lipschitz.DATA_FILES)
        rows, cost = (report.read_csv(folder / name) for name in lipschitz.DATA_FILES)
        rebuilt = lipschitz.page_text(rows, cost, spec_path.relative_to(REPO), page.stem)
    else:
        rebuilt = pages.docs_page_text(bench_report(page), spec_path.relative_to(REPO), page.stem)
    text = page.read_text()
    assert rebuilt == text, (
        f"{page.relative_to(REPO)} is not what its data and spec give ({first_difference(text, rebuilt)}); "
        f"regenerate it with `{command(spec_path)}`"
    )


@pytest.mark.parametrize("page", [p for p in PAGES if spec_of(p) != LIPSCHITZ], ids=lambda p: p.stem)
def test_summary_and_comparisons_are_recomputed_from_results(page, tmp_path):
    built = bench_report(page)
    report.write_derived(built, tmp_path)
    for name in report.DERIVED_FILES:
        assert (tmp_path / name).read_text() == (page.parent / page.stem / name).read_text(), name


# -- hand-written sentences that state a result, each checked against the published data ----------------
def final_values(data: report.BenchReport, metric: str, generator: str = "raw") -> list[float]:
    return [r[f"final_{metric}"] for r in data.rows if r["generator"] == generator and r["status"] == "finished"]


def mean_final(data: report.BenchReport, method: str, metric: str) -> float:
    return statistics.mean(
        r[f"final_{metric}"] for r in data.rows
        if r["method"] == method and r["generator"] == "raw" and r["status"] == "finished"
    )


def softplus_worst_for_every_method(data: report.BenchReport) -> bool:
    methods = {group.split(" ")[0] for group in dict.fromkeys(r["method"] for r in data.rows)}
    activations = ["leaky_relu", "elu", "softplus", "softplus20"]
    worst = {m: max(activations, key=lambda a: mean_final(data, f"{m} (activation={a})", "fid")) for m in methods}
    paper = data.spec.paper.values
    in_paper = {m: max(activations, key=lambda a: float(paper[f"{m} (activation={a})"].split("/")[1])) for m in methods}
    return set(worst.values()) == set(in_paper.values()) == {"softplus"}


def floor_fid(data: report.BenchReport) -> float:
    (floor,) = report.floors_of(data)
    return report.floor_summary(floor, "fid")["mean"]


CLAIMS: list[tuple[str, str, Callable[[report.BenchReport], Any]]] = [
    ("digits", "real images at the generated sample count score about 0.1 in this feature space",
     lambda data: 0.05 <= floor_fid(data) <= 0.2),
    ("ablation-formulation", "every run's final IS (raw generator) is above 2,",
     lambda data: min(final_values(data, "is")) > 2),
    ("ablation-formulation", "weight-rescale variant of GN",  # the caveat on the authors' later GN numbers
     lambda data: "weight-rescale variant" in pages.paper_table(data)),
    ("ablation-activation", "Softplus (β = 1) has the highest mean final FID (raw generator) of the four activations here, as it has in the paper",
     softplus_worst_for_every_method),
    ("ablation-activation", "every run's final IS (raw generator) is above 2.4.",
     lambda data: min(final_values(data, "is")) > 2.4),
]


@pytest.mark.parametrize("stem, sentence, holds", CLAIMS, ids=[f"{c[0]}: {c[1][:40]}" for c in CLAIMS])
def test_a_hand_written_result_holds_on_the_published_data(stem, sentence, holds):
    page = RESULTS / f"{stem}.md"
    spec = spec_of(page)
    said = " ".join(f"{load_spec(spec).description} {spec.read_text()}".split())
    assert sentence in said, f"{spec.name} no longer says '{sentence}': update this check with it"
    assert holds(bench_report(page)), f"{spec.name} says '{sentence}', which its published data do not support"


def test_the_sampling_batch_the_digits_page_states_is_the_one_evaluation_uses():
    spec_path = BENCH / "digits.yaml"
    spec = load_spec(spec_path)
    cells = expand(spec, spec_path, output_root(spec))
    config = cells[0].config
    generator = build_models(config, build_dataset(config)).generator
    seen: list[int] = []
    norm = next(m for m in generator.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm))
    norm.register_forward_pre_hook(lambda module, inputs: seen.append(len(inputs[0])) if module.training else None)
    sample = evaluation_sampler(generator, config, "cpu")
    for _ in sampled_batches(sample, 2 * config.train.batch_size_g + 10, config.eval.batch_size):
        pass
    assert seen and set(seen) == {config.train.batch_size_g} == {128}
    assert "each sampling batch of 128 images (`train.batch_size_g`)" in sampling_note(cells)
