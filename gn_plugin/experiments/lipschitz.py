"""``gnbench lipschitz``: the paper's Lipschitz experiment (Theorem 5), measured on trained discriminators.

Theorem 5 says that when every layer is 1-Lipschitz (spectral normalization), the Lipschitz constant
of the first k layers can only shrink as k grows, so a deep SN discriminator ends far below 1; GN
bounds the whole model instead (‖∇ₓf̂‖ ≤ 1 for piecewise-linear D) and does not lose capacity with
depth. The experiment is a benchmark spec whose grid varies the discriminator's depth: each cell
trains a GAN with the Wasserstein loss under one norm, then the trained D's empirical Lipschitz
constant is estimated as the largest per-sample input-gradient norm ‖∇ₓD(x)‖ over real, generated
and interpolated points, and plotted against depth.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from gn_plugin.config import RECIPES
from gn_plugin.errors import GnPluginError
from gn_plugin.evaluation.sampling import latent_sampler
from gn_plugin.experiments.bench import add_arguments, execute, resolve_jobs
from gn_plugin.experiments.pages import cost_table
from gn_plugin.experiments.plots import plt
from gn_plugin.experiments.report import COST_COLUMNS, cost_rows, read_csv, write_csv
from gn_plugin.experiments.spec import BenchSpec, Cell, axis_name, expand, find_spec, load_spec, output_root, prepare
from gn_plugin.norms.base import unwrap
from gn_plugin.training import checkpoint
from gn_plugin.training.build import build_models, build_norm
from gn_plugin.training.probes import input_gradient_norms
from gn_plugin.training.saved_run import SavedRun, load_run

DEFAULT_SPEC = RECIPES / "bench" / "lipschitz.yaml"
POINT_KINDS = ("real", "fake", "interpolated")


def trained_discriminator(run: SavedRun) -> nn.Module:
    """The run's norm wrapper around its discriminator, with the weights of its latest checkpoint, in eval mode.

    Eval mode keeps spectral normalization's stored singular vectors (no power iteration while probing).
    """
    state = checkpoint.load(run.files.latest_checkpoint, map_location=run.device)
    wrapper = build_norm(run.config, build_models(run.config, run.dataset).discriminator).to(run.device)
    wrapper.load_state_dict(state["discriminator"])
    return wrapper.eval()


def probe_points(run: SavedRun, count: int, seed: int) -> dict[str, Tensor]:
    """``count`` real training images, generated images (the raw G that D was trained against) and interpolates."""
    rng = torch.Generator().manual_seed(seed)
    index = torch.randperm(len(run.dataset), generator=rng)[:count]
    real = torch.stack([run.dataset[int(i)][0] for i in index]).to(run.device)
    fake = latent_sampler(run.generator, run.device, seed, mode=run.config.eval.generator_mode)(len(real))
    alpha = torch.rand(len(real), 1, 1, 1, generator=rng).to(run.device)
    return {"real": real, "fake": fake, "interpolated": alpha * real + (1 - alpha) * fake}


def estimate(run_dir: Path, points: int = 512, seed: int = 0) -> dict[str, float]:
    """Max per-sample ‖∇ₓD(x)‖ of a trained run's D: per point kind, overall, and for the raw f inside the norm."""
    run = load_run(run_dir, "latest")
    if run.config.model.conditional:
        raise GnPluginError(f"{run_dir}: the Lipschitz experiment supports unconditional models only")
    wrapper = trained_discriminator(run)
    result: dict[str, float] = {}
    for kind, x in probe_points(run, points, seed).items():
        result[kind] = float(input_gradient_norms(wrapper, x, None).max())
        result[f"raw_{kind}"] = float(input_gradient_norms(unwrap(wrapper), x, None).max())
    result["lipschitz"] = max(result[k] for k in POINT_KINDS)
    result["raw_lipschitz"] = max(result[f"raw_{k}"] for k in POINT_KINDS)
    return result


def measure(cells: list[Cell], points: int) -> list[dict[str, Any]]:
    """One row per finished cell: method, the varied value, seed and the estimates."""
    (key,) = {k for cell in cells for k, _ in cell.variant}
    rows = []
    for cell in cells:
        if cell.finished:
            value = dict(cell.variant)[key]
            estimates = estimate(cell.run_dir, points, cell.seed)
            rows.append({"method": cell.method, "x": value, "seed": cell.seed, "points": points, **estimates})
    return rows


def summarize(rows: list[dict[str, Any]], column: str) -> dict[str, dict[Any, tuple[float, float, float]]]:
    """method -> x -> (mean, min, max) of ``column`` over seeds."""
    table: dict[str, dict[Any, list[float]]] = {}
    for row in rows:
        table.setdefault(row["method"], {}).setdefault(row["x"], []).append(row[column])
    return {
        method: {x: (statistics.mean(v), min(v), max(v)) for x, v in sorted(by_x.items())}
        for method, by_x in table.items()
    }


def plot(rows: list[dict[str, Any]], axis_label: str, path: Path) -> None:
    """Estimated Lipschitz constant against the varied key, per norm (log scale), with the raw f dashed."""
    figure, axis = plt.subplots(figsize=(6.4, 4.2))
    normalized, raw = summarize(rows, "lipschitz"), summarize(rows, "raw_lipschitz")
    for method, by_x in normalized.items():
        xs = list(by_x)
        mean = [by_x[x][0] for x in xs]
        errors = [[m - by_x[x][1] for m, x in zip(mean, xs)], [by_x[x][2] - m for m, x in zip(mean, xs)]]
        line = axis.errorbar(xs, mean, yerr=errors, marker="o", capsize=3, label=f"{method}: D as trained")[0]
        if any(abs(raw[method][x][0] - by_x[x][0]) > 1e-6 * max(1.0, by_x[x][0]) for x in xs):
            axis.plot(xs, [raw[method][x][0] for x in xs], linestyle="--", marker="x", color=line.get_color(),
                      label=f"{method}: raw f inside the normalization")
    axis.axhline(1.0, color="black", linewidth=1, linestyle=":", label="1-Lipschitz")
    axis.set_yscale("log")
    axis.set_xlabel(axis_label)
    axis.set_ylabel("max per-sample ‖∇ₓ D(x)‖")
    axis.set_title("Empirical Lipschitz constant of trained discriminators (Wasserstein loss)", fontsize=10)
    axis.grid(alpha=0.3, which="both")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)


def results_table(rows: list[dict[str, Any]], axis_label: str) -> str:
    """Markdown: per method and x, mean (min–max over seeds) of the estimate over all points, then the means per
    point kind and for raw f."""
    columns = ["lipschitz", *POINT_KINDS, "raw_lipschitz"]
    names = ["max over all points (min–max over seeds)", " / ".join(POINT_KINDS), "raw f"]
    stats = {c: summarize(rows, c) for c in columns}
    lines = [f"| norm | {axis_label} | " + " | ".join(names) + " |", "|---" * (len(names) + 2) + "|"]
    for method, by_x in stats["lipschitz"].items():
        for x in by_x:
            mean, low, high = stats["lipschitz"][method][x]
            kinds = " / ".join(f"{stats[kind][method][x][0]:.3f}" for kind in POINT_KINDS)  # ranges: lipschitz.csv
            overall = f"{mean:.3f}" if low == high else f"{mean:.3f} ({low:.3f}–{high:.3f})"
            lines.append(f"| {method} | {x} | {overall} | {kinds} | {stats['raw_lipschitz'][method][x][0]:.3f} |")
    return "\n".join(lines)


def findings(rows: list[dict[str, Any]], axis_label: str) -> str:
    """One generated sentence per norm: how its estimate moves from the smallest to the largest value."""
    lines = []
    for method, by_x in summarize(rows, "lipschitz").items():
        xs = list(by_x)
        first, last = by_x[xs[0]][0], by_x[xs[-1]][0]
        low, high = min(v[0] for v in by_x.values()), max(v[0] for v in by_x.values())
        lines.append(
            f"- **{method}**: {first:.3f} at {axis_label} {xs[0]}, {last:.3f} at {axis_label} {xs[-1]} "
            f"(range {low:.3f} to {high:.3f}; {last / first:.2f}× from the shallowest to the deepest)."
        )
    return "\n".join(lines)


DATA_FILES = ("lipschitz.csv", "cost.csv")


def page_text(rows: list[dict[str, Any]], cost: list[dict[str, Any]], spec_path: str | Path, stem: str) -> str:
    """The docs page of the experiment: a function of its published data (``lipschitz.csv`` and ``cost.csv``
    rows, as :func:`~gn_plugin.experiments.report.read_csv` reads them) and the spec."""
    spec, cells = prepare_cells(spec_path)
    axis_label = axis_name(next(iter(spec.grid)))
    points = rows[0]["points"]
    steps = max(cell.config.train.steps for cell in cells)
    command = f"gnbench lipschitz {Path(spec_path).as_posix()}"
    spec_text = "\n".join("    " + line for line in Path(spec_path).read_text().rstrip().splitlines())
    root = cost[-1]["out"] if cost else output_root(spec).as_posix()
    dates = sorted({row["started_at"][:10] for row in cost})
    trained = f", trained {' to '.join(dict.fromkeys([dates[0], dates[-1]]))}" if dates else ""
    files = "\n".join(f"- [{name}]({stem}/{name})" for name in DATA_FILES)
    return f"""# The Lipschitz experiment (Theorem 5)

**Question.** Spectral normalization makes every layer of D 1-Lipschitz. Theorem 5 of the GN paper
says the Lipschitz constant of such a network can only shrink as layers are added, so a deep SN
discriminator is constrained far below 1 — it cannot use the capacity the 1-Lipschitz constraint
allows. Gradient normalization bounds the whole model instead: for a piecewise-linear D,
‖∇ₓf̂‖ = (‖∇f‖ / (‖∇f‖ + |f|))² ≤ 1 at every point, whatever the depth. The paper showed this by
training Wasserstein-loss discriminators of growing depth and estimating their Lipschitz constants;
this page repeats that experiment at CPU scale.

!!! info "How these numbers were obtained"
    Generated by `{command}` from the runs in `{root}`{trained}; the table and the sentences below it
    are computed from the data published with this page ([Data](#data)).
    Each run trains the digits MLP GAN with the **Wasserstein loss** under one norm, at the depth on
    the x axis (hidden layers of the MLP; the `mlp` model has one `depth` for G and D). After training, the
    empirical Lipschitz constant of the trained D is the **largest per-sample input-gradient norm
    ‖∇ₓD(x)‖** over {points} real training images, {points} images of the trained generator and
    {points} random interpolates between them (D in eval mode). "D as trained" is the function the
    loss saw (f̂ for GN, the spectrally normalized f for SN); "raw f" is the network inside GN's
    normalization. Values are means over seeds; error bars and ranges are min–max over seeds (every
    seed's estimates are in lipschitz.csv). Machines and wall time: [Cost](#cost).

![Lipschitz constant against depth]({stem}/lipschitz.png)

## Measured

{results_table(rows, axis_label)}

{findings(rows, axis_label)}

## What it means

- **SN** makes each layer's spectral norm 1, so 1 is only an upper bound for the whole network,
  reached only if the top singular directions of consecutive layers line up and no activation
  cuts them. Theorem 5: the Lipschitz constant of the first k such layers can only shrink as k
  grows. A deeper SN discriminator is therefore held further below 1 than the Wasserstein
  objective — which rewards the steepest possible slope between real and fake — would take it.
- **GN** bounds the model as a whole: on each linear piece ‖∇ₓf̂‖ = (‖∇f‖ / (‖∇f‖ + |f|))², which
  approaches 1 wherever |f| is small compared with ‖∇f‖. Depth does not enter the bound.
- **raw f inside GN**: f̂ does not change when f is multiplied by a positive constant
  (f̂(c·f) = f̂(f)), so the slope of the raw network is arbitrary: neither constrained nor used.
- Scale: digits (8×8), a small MLP, {steps} generator steps and one estimate per run. A maximum over
  {3 * points} points is a lower bound of the true constant. The paper ran CIFAR-10 CNNs; this page
  checks the direction of the effect, not its size.

## Cost

{cost_table(cost)}

## Data

{files}

## Reproduce

```bash
{command}       # --jobs N, --print-commands as with gnbench bench
```

??? note "The experiment spec ({Path(spec_path).as_posix()})"

    ```yaml
{spec_text}
    ```
"""


def prepare_cells(spec_path: str | Path) -> tuple[BenchSpec, list[Cell]]:
    """The spec and its cells' configs (for the page; nothing is written)."""
    spec = load_spec(spec_path)
    return spec, expand(spec, spec_path, output_root(spec))


def write_page(page: Path, root: Path, spec_path: str | Path) -> list[Path]:
    """The docs page, with the data files and the plot copied from ``root`` to ``<page stem>/``."""
    assets = page.parent / page.stem
    assets.mkdir(parents=True, exist_ok=True)
    copied = [Path(shutil.copy(root / name, assets / name)) for name in (*DATA_FILES, "lipschitz.png")]
    rows, cost = (read_csv(assets / name) for name in DATA_FILES)
    page.write_text(page_text(rows, cost, spec_path, page.stem))
    return [page, *copied]


def run_lipschitz(
    spec_path: str | Path = DEFAULT_SPEC,
    *,
    jobs: int | None = None,
    out: str | Path | None = None,
    overrides: list[str] | None = None,
    print_commands: bool = False,
    points: int = 512,
    write_docs: bool = True,
) -> list[Path]:
    """Train the spec's cells (skipping finished ones), estimate every D's Lipschitz constant, plot and report."""
    spec, cells = prepare(spec_path, out, overrides)
    if len(spec.grid) != 1:
        raise GnPluginError(f"{spec_path}: grid: the Lipschitz experiment varies exactly one key (the depth), got {len(spec.grid)}")
    invocation = execute(cells, jobs or resolve_jobs(spec.jobs), print_commands=print_commands)
    if invocation is None:
        return []
    root = cells[0].root
    rows = measure(cells, points)
    if not rows:
        raise GnPluginError(f"{spec_path}: no run finished; see {root / 'logs'}")
    axis_label = axis_name(next(iter(spec.grid)))
    written = [root / "lipschitz.csv", root / "cost.csv", root / "lipschitz.png"]
    write_csv(rows, written[0])
    write_csv(cost_rows(root), written[1], COST_COLUMNS)
    plot(rows, axis_label, written[2])
    if spec.docs and write_docs and not overrides:
        written += write_page(Path(spec.docs), root, spec_path)
    for path in written:
        print(f"wrote {path}")
    if invocation.failed:
        raise GnPluginError(f"{len(invocation.failed)} runs failed ({', '.join(invocation.failed)}); see {root / 'logs'}")
    return written


def command_lipschitz(args: argparse.Namespace) -> None:
    # The shipped spec (the default) runs anywhere; only a spec file given by path writes its docs page.
    run_lipschitz(
        find_spec(args.spec or DEFAULT_SPEC), jobs=args.jobs, out=args.out, overrides=args.set,
        print_commands=args.print_commands, points=args.points, write_docs=args.spec is not None and Path(args.spec).suffix == ".yaml",
    )


def add_command(subparsers: argparse._SubParsersAction) -> None:
    """Register ``gnbench lipschitz``."""
    parser = subparsers.add_parser(
        "lipschitz", help="Theorem 5: empirical Lipschitz constant of SN and GN discriminators against depth"
    )
    parser.add_argument(
        "spec", nargs="?", help="experiment spec (default: the shipped one; give yaml_configs/bench/lipschitz.yaml "
        "in a source checkout to rewrite docs/results/lipschitz.md)",
    )
    add_arguments(parser)
    parser.add_argument("--points", type=int, default=512, help="real, fake and interpolated points per estimate")
    parser.set_defaults(handler=command_lipschitz)
