"""The files a benchmark writes for readers: the CSV files, ``results.md``, plots and the docs page."""

from __future__ import annotations

import datetime
import shutil
from pathlib import Path

from gn_plugin.experiments.invocations import read_invocations
from gn_plugin.experiments.machine import describe_machine
from gn_plugin.experiments.plots import plot_curves, plot_samples
from gn_plugin.experiments.report import (
    CSV_COMPARISON_COLUMNS,
    SUMMARY_COLUMNS,
    BenchReport,
    last_jobs,
    report_body,
    write_csv,
)
from gn_plugin.experiments.spec import BenchSpec, Cell


def write_report(report: BenchReport, root: Path) -> list[Path]:
    """``results.csv``, ``summary.csv``, ``comparisons.csv``, ``results.md``, ``curves.png`` and ``samples.png`` in ``root``."""
    names = ("results.csv", "summary.csv", "comparisons.csv", "results.md", "curves.png", "samples.png")
    paths = [root / name for name in names]
    write_csv(report.rows, paths[0])
    write_csv(report.summaries, paths[1], SUMMARY_COLUMNS)
    write_csv(report.comparisons, paths[2], CSV_COMPARISON_COLUMNS)
    spec = report.spec
    paths[3].write_text(f"# {spec.title or spec.name}: results\n\n{report_body(report, last_jobs(root))}\n")
    plot_curves(report, paths[4])
    plot_samples(report.cells, paths[5])
    return paths


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
        ("data", f"{config.data.name} (hflip {'on' if config.data.hflip else 'off'})"),
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


def cost_table(root: Path) -> str:
    """The recorded invocations that trained something: when, how many runs, how long, on what."""
    lines = [
        "| started | runs trained | skipped (finished) | parallel jobs | wall time | load average | machine |",
        "|---|---|---|---|---|---|---|",
    ]
    for record in read_invocations(root):
        load = record.get("load")
        busy = f"{load['before_1min']:.1f} before, {load['after_15min']:.1f} over the last 15 min" if load else "–"
        lines.append(
            f"| {record['started_at']} | {record['executed']} | {record['skipped']} | {record['jobs']} | "
            f"{record['elapsed_s'] / 60:.1f} min | {busy} | {describe_machine(record['machine'])} |"
        )
    lines += [
        "",
        (
            "Load average: runnable processes on the machine (its own parallel jobs count about one each); "
            "a value above the number of parallel jobs means other work shared the CPU and slowed the runs."
        ),
    ]
    return "\n".join(lines)


def write_docs_page(
    report: BenchReport, spec_path: str | Path, root: Path, page: Path, report_seconds: float
) -> list[Path]:
    """The benchmark's docs page (Markdown) with its plots copied next to it, in ``<page stem>/``.

    The results come right after the introduction (the description up to its first ``##`` heading);
    the description's sections follow the plots and the setup. ``report_seconds``: how long the floor
    and the report took, stated on the page.
    """
    spec, cells = report.spec, report.cells
    assets = page.parent / page.stem
    assets.mkdir(parents=True, exist_ok=True)
    images = [Path(shutil.copy(root / name, assets / name)) for name in ("curves.png", "samples.png")]
    today = datetime.date.today().isoformat()
    command = f"gnbench bench {Path(spec_path).as_posix()}"
    spec_text = Path(spec_path).read_text().rstrip()
    introduction, sections = description_parts(spec.description)
    text = f"""# {spec.title or spec.name}

{introduction}

!!! info "How these numbers were obtained"
    Generated on {today} by `{command}` from the runs in `{root.as_posix()}`; rerunning the command
    rewrites this page. The machines and wall times are in [Cost](#cost).

## Results

{report_body(report, last_jobs(root))}

## Curves

![metrics against generator step and FID against wall time]({page.stem}/curves.png)

## Samples

![samples of each method's raw generator above its EMA generator, the same z]({page.stem}/samples.png)

## Setup

{setup_table(spec, cells)}

{sections}

## Cost

{cost_table(root)}

Wall time: the training runs with their evaluations, from the first start to the last finish.
Computing the real-vs-real floor and writing this report took {report_seconds:.0f} s more.

## Reproduce

```bash
{command}          # skips finished runs; --jobs N, --print-commands for a cluster
```

??? note "The benchmark spec ({Path(spec_path).as_posix()})"

    ```yaml
{chr(10).join('    ' + line for line in spec_text.splitlines())}
    ```
"""
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(text)
    return [page, *images]
