"""The files a benchmark writes for readers: its data, ``results.md``, the plots and the docs page.

The docs page is :func:`docs_page_text` of the report alone, and the report is computed from the data
files published next to the page, so the page can be rebuilt from its own folder and the spec.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from gn_plugin.experiments.metric_validation import MONOTONICITY_CSV, checks_markdown
from gn_plugin.experiments.plots import plot_curves, plot_samples
from gn_plugin.experiments.report import CHECK_FILES, DATA_FILES, DERIVED_FILES, BenchReport, write_derived
from gn_plugin.experiments.spec import BenchSpec, Cell, output_root
from gn_plugin.experiments.tables import paper_table, report_body

PAPER_HEADING = "## Against the paper"
FILE_CONTENTS = {
    "results.csv": "one row per run and generator: status, cost, and each metric at each stage (`final_<metric>`, "
    "`best_<metric>`, `equal_time_<metric>`, with the step each came from)",
    "curves.csv": "every evaluation of every run and generator (step, wall time, metrics)",
    "floor.csv": "the real-vs-real floor: each draw's metrics, then its held-out context",
    "cost.csv": "every invocation that trained runs: start, runs, jobs, wall time, load, machine",
    "summary.csv": "from results.csv: n, mean, median, std and the 95 % t interval per method, generator, stage and metric",
    "comparisons.csv": "from results.csv: every pair of every family (primary first): difference, Welch's interval, "
    "p-values, TOST, P(A better), seeds needed, verdict",
    "metric_validation.csv": "every degraded set of real images: degradation, strength, draw and its metrics",
    MONOTONICITY_CSV: "from metric_validation.csv: each metric's mean per strength, the direction it moved and the one it must",
    "memorisation.csv": "per run and space: nearest-training-image distances of its samples against the held-out images'",
}


def write_report(report: BenchReport, root: Path) -> list[Path]:
    """``summary.csv``, ``comparisons.csv``, ``results.md``, ``curves.png`` and ``samples.png`` in ``root``."""
    paths = write_derived(report, root)
    spec = report.spec
    results = root / "results.md"
    checks = report_checks(report)
    results.write_text(f"# {spec.title or spec.name}: results\n\n{report_body(report)}\n" + (f"\n{checks}\n" if checks else ""))
    curves, samples = root / "curves.png", root / "samples.png"
    plot_curves(report, curves)
    plot_samples(report.cells, samples)
    return [*paths, results, curves, samples]


def report_checks(report: BenchReport) -> str:
    """The metric checks of a spec with ``validate_metrics``, from the published CSVs (empty without them)."""
    return checks_markdown(report.data.degradations, report.data.memorisation, report.spec.metrics)


def published_files(report: BenchReport) -> list[str]:
    """The files published with the page: the data, what is computed from it, and the checks where present."""
    checks = [CHECK_FILES[0], MONOTONICITY_CSV] if report.data.degradations else []
    checks += [CHECK_FILES[1]] if report.data.memorisation else []
    return [*DATA_FILES, *DERIVED_FILES, *checks]


def description_parts(description: str) -> tuple[str, str]:
    """A spec's description split before its first ``## `` heading: the introduction and the sections from there."""
    text = "\n" + description.strip()
    at = text.find("\n## ")
    return (text.strip(), "") if at < 0 else (text[:at].strip(), text[at:].strip())


def setup_table(spec: BenchSpec, cells: list[Cell]) -> str:
    """What every cell shares, then what each method changes."""
    config = cells[0].config
    train, options = config.train, config.eval
    model = config.model.name + (f" {config.model.options}" if config.model.options else "")
    shared = [
        ("data", f"{config.data.name} (data.hflip {config.data.hflip})"),
        ("model", f"{model}, z_dim {config.model.z_dim}, width ×{config.model.width}"),
        ("generator steps", f"{train.steps} (n_dis {train.n_dis})"),
        ("batch D / G", f"{train.batch_size_d} / {train.batch_size_g}"),
        ("lr D / G, betas", f"{train.lr_d:g} / {train.lr_g:g}, {tuple(train.betas)}, decay {train.lr_decay}"),
        ("EMA of G", f"decay {train.ema.decay}, from step {train.ema.start}"),
        ("evaluation", f"every {options.every} steps, {options.num_samples} samples, {', '.join(options.metrics)}"),
        ("seeds", ", ".join(map(str, spec.seeds))),
    ] + [(f"grid: `{key}`", ", ".join(map(str, values))) for key, values in spec.grid.items()]
    lines = ["| shared by every run | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in shared]
    lines += ["", "| method | norm | loss | regularizers |", "|---|---|---|---|"]
    seen = set()
    for cell in cells:
        if cell.method in seen:
            continue
        seen.add(cell.method)
        c = cell.config
        regularizers = ", ".join(f"{r.name} {r.options}" if r.options else r.name for r in c.regularizers) or "–"
        norm = f"{c.norm.name} {c.norm.options}" if c.norm.options else c.norm.name
        loss = f"{c.loss.name} {c.loss.options}" if c.loss.options else c.loss.name
        lines.append(f"| {cell.method or 'base'} | {norm} | {loss} | {regularizers} |")
    return "\n".join(lines)


def cost_table(rows: list[dict[str, Any]]) -> str:
    """The recorded invocations (``cost.csv`` rows): when, how many runs, how long, on what."""
    lines = [
        "| started | runs | jobs | wall time | load average: before / last 15 min | machine |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        before, after = row.get("load_before_1min"), row.get("load_after_15min")
        busy = f"{before:.1f} / {after:.1f}" if before is not None and after is not None else "–"
        trained = f"{row['executed']} trained" + (f", {row['failed']} failed" if row.get("failed") else "")
        trained += f", {row['skipped']} skipped" if row["skipped"] else ""
        if row.get("stopped"):
            trained += f" (stopped by {row['stopped']})"
        parts = row["machine"].split("; ")  # CPU and GPUs; system; Python; torch (all of it in cost.csv)
        machine = "; ".join([parts[0], parts[-1]])
        lines.append(
            f"| {row['started_at'][:16].replace('T', ' ')} | {trained} | {row['jobs']} | "
            f"{row['elapsed_s'] / 60:.1f} min | {busy} | {machine} |"
        )
    lines += [
        "",
        (
            "Load average: runnable processes on the machine, over the minute before the start and the 15 minutes "
            "before the end (its own parallel jobs count about one each); "
            "a value above the number of parallel jobs means other work shared the CPU and slowed the runs. "
            "Skipped runs had finished in an earlier invocation; a run stopped by a signal resumes from its "
            "checkpoint at the next one."
        ),
    ]
    return "\n".join(lines)


def with_paper_table(report: BenchReport, sections: str) -> str:
    """The description's sections with the generated table of published numbers opening its
    ``## Against the paper`` section (or a section of its own before them)."""
    table = paper_table(report)
    if not table:
        return sections
    if sections.startswith(PAPER_HEADING + "\n") or f"\n{PAPER_HEADING}\n" in sections:
        at = sections.index(PAPER_HEADING) + len(PAPER_HEADING)
        return f"{sections[:at]}\n\n{table}{sections[at:]}"
    return f"{PAPER_HEADING}\n\n{table}" + (f"\n\n{sections}" if sections else "")


def data_table(report: BenchReport, stem: str) -> str:
    lines = ["| file | content |", "|---|---|"]
    lines += [f"| [{name}]({stem}/{name}) | {FILE_CONTENTS[name]} |" for name in published_files(report)]
    return "\n".join(lines)


def docs_page_text(report: BenchReport, spec_path: str | Path, stem: str) -> str:
    """The benchmark's docs page: a function of the report (its data and spec) and the spec file alone.

    The results come right after the introduction (the description up to its first ``##`` heading);
    the description's sections follow the plots and the setup. ``stem``: the folder of the page's files.
    """
    spec, cells, cost = report.spec, report.cells, report.data.cost
    command = f"gnbench bench {Path(spec_path).as_posix()}"
    spec_text = Path(spec_path).read_text().rstrip()
    introduction, sections = description_parts(spec.description)
    root = cost[-1]["out"] if cost else output_root(spec).as_posix()
    dates = sorted({row["started_at"][:10] for row in cost})
    checks = report_checks(report)
    checks = f"\n{checks}\n" if checks else ""
    trained = f", trained {' to '.join(dict.fromkeys([dates[0], dates[-1]]))}" if dates else ""
    return f"""# {spec.title or spec.name}

{introduction}

!!! info "How these numbers were obtained"
    Generated by `{command}` from the runs in `{root}`{trained}; rerunning the command rewrites this
    page. Every table and every sentence stating a result is computed from the data published with it
    ([Data](#data)) and the spec; the machines and wall times are in [Cost](#cost).

{report_body(report)}

## Curves

![metrics against generator step and the primary metric against wall time]({stem}/curves.png)

## Samples

![samples of each method's raw generator above its EMA generator, the same z]({stem}/samples.png)
{checks}
## Setup

{setup_table(spec, cells)}

{with_paper_table(report, sections)}

## Cost

{cost_table(cost)}

Wall time: the training runs with their evaluations, from the first start to the last finish.

## Data

Every number on this page comes from these files, published with it:

{data_table(report, stem)}

## Reproduce

```bash
{command}          # skips finished runs; --jobs N, --print-commands for a cluster
```

??? note "The benchmark spec ({Path(spec_path).as_posix()})"

    ```yaml
{chr(10).join('    ' + line for line in spec_text.splitlines())}
    ```
"""


def write_docs_page(report: BenchReport, spec_path: str | Path, root: Path, page: Path) -> list[Path]:
    """The docs page (Markdown), with its data files and plots copied from ``root`` to ``<page stem>/``."""
    assets = page.parent / page.stem
    assets.mkdir(parents=True, exist_ok=True)
    names = (*published_files(report), "curves.png", "samples.png")
    copied = [Path(shutil.copy(root / name, assets / name)) for name in names]
    page.write_text(docs_page_text(report, spec_path, page.stem))
    return [page, *copied]
