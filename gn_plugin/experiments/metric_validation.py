"""Do a metric space's metrics rank known degradations of real images the way they must?

Real images are degraded at increasing strengths and each degraded set is scored exactly as a
generator's samples are: the evaluator of the config (its metric space, reference statistics and
``eval.num_samples``). Four degradations, each from strength 0 (no degradation) upwards:

- ``noise``: Gaussian noise of standard deviation σ (in the [-1, 1] image range), clipped;
- ``blur``: a Gaussian blur of σ pixels (5 × 5 kernel);
- ``drop_classes``: only the first C − k of the C classes are drawn (mode dropping, needs labels);
- ``copies``: a fraction p of the held-out images is replaced by training images of the same
  classes (needs a held-out split), so every strength has as many distinct images, of the same
  classes, and differs from the others in how many are copies alone. Against a reference made of
  the training images, copies *improve* FID: a metric against the training set rewards
  memorisation, which is why the memorisation check (:mod:`gn_plugin.experiments.memorisation`)
  exists.

``noise``, ``blur`` and ``drop_classes`` draw their images with replacement from the training
images (the reference's own images), so strength 0 is the benchmark's resampled floor; ``copies``
draws from the held-out images (at most a few hundred distinct ones on digits, hence its own, higher
strength 0). Each degradation states which metrics must rise or fall with its
strength (``expected``); where theory does not commit (recall under noise, for instance, can rise as
noise widens the samples' k-NN balls) it states nothing, and the table reports what happened.
A metric is called monotone in a degradation when its mean over the draws never moves against the
overall trend from one strength to the next (ties allowed).

``gnbench validate-metrics SPEC`` runs it with a benchmark's data, evaluation and metrics, and the
memorisation check on the benchmark's finished runs.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchvision.transforms.functional import gaussian_blur

from gn_plugin.config import Config
from gn_plugin.data.base import ImageDataset, dataset_tensors
from gn_plugin.errors import GnPluginError
from gn_plugin.evaluation.evaluator import Evaluator
from gn_plugin.experiments import memorisation
from gn_plugin.experiments.report import read_csv, write_csv
from gn_plugin.experiments.spec import Cell, expand, find_spec, load_spec, output_root
from gn_plugin.experiments.tables import details, label, number
from gn_plugin.training.build import (
    build_dataset_and_models,
    build_reference_dataset,
    evaluation_device,
    held_out_split,
)

RISES, FALLS, FLAT, NOT_MONOTONE = "rises", "falls", "flat", "not monotone"
VALIDATION_CSV, MONOTONICITY_CSV = "metric_validation.csv", "metric_monotonicity.csv"
ARROWS = {RISES: "↑", FALLS: "↓", FLAT: "–", NOT_MONOTONE: "↕"}
BLUR_KERNEL = 5
METRICS_PER_TABLE = 4  # so that each table fits the page column


@dataclass(frozen=True)
class RealImages:
    """The real images a degradation draws from: training images with labels, held-out images with labels (or None)."""

    training: Tensor
    labels: Tensor
    num_classes: int
    held_out: Tensor | None = None
    held_out_labels: Tensor | None = None


def drawn(images: Tensor, count: int, rng: torch.Generator) -> Tensor:
    """``count`` images drawn with replacement (an i.i.d. sample of the set's empirical distribution)."""
    return images[torch.randint(len(images), (count,), generator=rng)]


def noisy(real: RealImages, sigma: float, count: int, rng: torch.Generator) -> Tensor:
    images = drawn(real.training, count, rng)
    return (images + sigma * torch.randn(images.shape, generator=rng)).clamp(-1, 1)


def blurred(real: RealImages, sigma: float, count: int, rng: torch.Generator) -> Tensor:
    images = drawn(real.training, count, rng)
    return gaussian_blur(images, [BLUR_KERNEL, BLUR_KERNEL], [sigma, sigma]) if sigma > 0 else images


def classes_dropped(real: RealImages, dropped: float, count: int, rng: torch.Generator) -> Tensor:
    kept = real.num_classes - int(dropped)
    if kept < 1:
        raise GnPluginError(f"drop_classes: cannot drop {int(dropped)} of {real.num_classes} classes")
    return drawn(real.training[real.labels < kept], count, rng)


def matched_training_images(real: RealImages, rng: torch.Generator) -> Tensor:
    """For each held-out image, a training image of the same class, drawn at random (no image twice)."""
    matched = torch.empty(len(real.held_out_labels), dtype=torch.long)
    for class_id in real.held_out_labels.unique():
        slots = (real.held_out_labels == class_id).nonzero().flatten()
        pool = (real.labels == class_id).nonzero().flatten()
        if len(pool) < len(slots):
            raise GnPluginError(f"copies: class {int(class_id)} has fewer training images than held-out ones")
        matched[slots] = pool[torch.randperm(len(pool), generator=rng)[: len(slots)]]
    return real.training[matched]


def with_copies(real: RealImages, fraction: float, count: int, rng: torch.Generator) -> Tensor:
    """The held-out images with a share ``fraction`` of them replaced by training images of the same class.

    ``count`` images are drawn with replacement from those, as many distinct images, of the same
    classes, at every strength; the same held-out images are replaced, and more of them, as the
    strength grows, so the strengths differ in how many images are copies of training images alone.
    """
    images = real.held_out.clone()
    replaced = torch.randperm(len(images), generator=rng)[: round(fraction * len(images))]
    images[replaced] = matched_training_images(real, rng)[replaced]
    return drawn(images, count, rng)


@dataclass(frozen=True)
class Degradation:
    """A known way to make real images worse (or, for ``copies``, more memorised), at increasing strengths.

    ``expected``: metric -> ``rises`` or ``falls`` as the strength grows, for the metrics that must move;
    ``needs``: ``labels`` or ``held_out`` where the degradation needs them.
    """

    name: str
    title: str
    strengths: tuple[float, ...]
    apply: Callable[[RealImages, float, int, torch.Generator], Tensor]
    expected: dict[str, str] = field(default_factory=dict)
    needs: str | None = None
    base: str = "training"  # the images strength 0 draws from


FIDELITY_FALLS = {"fid": RISES, "kid": RISES, "is": FALLS, "precision": FALLS, "density": FALLS, "coverage": FALLS}
DEGRADATIONS: tuple[Degradation, ...] = (
    Degradation("noise", "Gaussian noise, σ", (0.0, 0.05, 0.1, 0.2, 0.4), noisy, FIDELITY_FALLS),
    Degradation("blur", "Gaussian blur, σ in pixels", (0.0, 0.4, 0.5, 0.6, 0.8), blurred,
                {**FIDELITY_FALLS, "recall": FALLS}),
    Degradation("drop_classes", "classes dropped", (0.0, 2.0, 4.0, 6.0, 8.0), classes_dropped,
                {"fid": RISES, "kid": RISES, "is": FALLS, "recall": FALLS, "coverage": FALLS}, needs="labels"),
    Degradation("copies", "share of held-out images replaced by training images", (0.0, 0.25, 0.5, 0.75, 1.0),
                with_copies,
                {"fid": FALLS, "kid": FALLS, "precision": RISES, "density": RISES, "coverage": RISES},
                needs="held_out", base="held_out"),
)


@dataclass(frozen=True)
class DegradationRow:
    """The metrics of one degraded set: a degradation at one strength, one draw."""

    degradation: str
    strength: float
    draw: int
    images: int
    metrics: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        return {"degradation": self.degradation, "strength": self.strength, "draw": self.draw, "images": self.images,
                **self.metrics}

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> DegradationRow:
        """A row of ``metric_validation.csv`` as :func:`~gn_plugin.experiments.report.read_csv` reads it."""
        fixed = ("degradation", "strength", "draw", "images")
        metrics = {k: float(v) for k, v in row.items() if k not in fixed and v is not None}
        return cls(row["degradation"], float(row["strength"]), int(row["draw"]), int(row["images"]), metrics)


@dataclass(frozen=True)
class Monotonicity:
    """How one metric moved over a degradation's strengths (means over the draws), against what it must do."""

    degradation: str
    metric: str
    strengths: tuple[float, ...]
    means: tuple[float, ...]
    observed: str  # rises, falls, flat or not monotone
    expected: str | None  # rises, falls, or None where the metric need not move one way

    @property
    def as_expected(self) -> bool | None:
        """True or False where a direction is expected, None where none is."""
        return None if self.expected is None else self.observed == self.expected

    def as_dict(self) -> dict[str, Any]:
        return {"degradation": self.degradation, "metric": self.metric, "expected": self.expected or "",
                "observed": self.observed, "as_expected": "" if self.as_expected is None else self.as_expected,
                "strengths": " ".join(f"{s:g}" for s in self.strengths),
                "means": " ".join(f"{m:.6g}" for m in self.means)}


def usable(degradations: Sequence[Degradation], real: RealImages) -> list[Degradation]:
    """The degradations ``real`` has what they need for (labels, a held-out split)."""
    has = {"labels": real.num_classes > 1, "held_out": real.held_out is not None and len(real.held_out) > 0, None: True}
    return [d for d in degradations if has[d.needs]]


def degradation_rows(
    real: RealImages,
    evaluator: Evaluator,
    *,
    degradations: Sequence[Degradation] = DEGRADATIONS,
    draws: int = 3,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> list[DegradationRow]:
    """Score every degradation at every strength, ``draws`` times, as ``evaluator`` scores a generator.

    Each degraded set has ``eval.num_samples`` images; draw ``d`` uses its own RNG (``seed + d``),
    restarted at every strength, so that the strengths of ``noise`` and ``blur`` degrade the same
    images (with the same noise pattern, scaled) and differ by the degradation alone. The
    undegraded sets (strength 0 of every degradation with the same base) are scored once per draw.
    """
    count = evaluator.settings.num_samples
    rows = []
    for draw in range(draws):
        undegraded: dict[str, dict[str, float]] = {}
        for degradation in usable(degradations, real):
            for strength in degradation.strengths:
                rng = torch.Generator().manual_seed(seed + draw)
                if strength == 0 and degradation.base in undegraded:
                    metrics = undegraded[degradation.base]
                else:
                    metrics = evaluator.evaluate(serve(degradation.apply(real, strength, count, rng)))
                    if strength == 0:
                        undegraded[degradation.base] = metrics
                rows.append(DegradationRow(degradation.name, strength, draw, count, metrics))
                if log:
                    log(f"draw {draw}: {degradation.name} {strength:g}: "
                        + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
    return rows


def serve(images: Tensor) -> Callable[[int], Tensor]:
    """``sample(n)`` that hands out ``images`` in order, as a generator's sampler hands out samples."""
    position = 0

    def sample(n: int) -> Tensor:
        nonlocal position
        position += n
        return images[position - n: position]

    return sample


def direction(values: Sequence[float]) -> str:
    """``rises`` / ``falls`` where no step goes against the trend (ties allowed), ``flat``, else ``not monotone``."""
    steps = np.diff(np.asarray(values, dtype=float))
    if np.all(steps == 0):
        return FLAT
    if np.all(steps >= 0):
        return RISES
    if np.all(steps <= 0):
        return FALLS
    return NOT_MONOTONE


def monotonicity(
    rows: Sequence[DegradationRow], metrics: Sequence[str], degradations: Sequence[Degradation] = DEGRADATIONS
) -> list[Monotonicity]:
    """For each degradation and metric in ``metrics``: its mean over the draws at each strength, and its direction."""
    checks = []
    for degradation in degradations:
        mine = [row for row in rows if row.degradation == degradation.name]
        if not mine:
            continue
        strengths = tuple(sorted({row.strength for row in mine}))
        for metric in metrics:
            means = tuple(
                float(np.mean([row.metrics[metric] for row in mine if row.strength == s])) for s in strengths
            )
            checks.append(Monotonicity(degradation.name, metric, strengths, means, direction(means),
                                       degradation.expected.get(metric)))
    return checks


def scored_monotonicity(rows: Sequence[DegradationRow], metrics: Sequence[str]) -> list[Monotonicity]:
    """:func:`monotonicity` of those of ``metrics`` the rows were scored with."""
    return monotonicity(rows, [m for m in metrics if rows and m in rows[0].metrics])


# -- text ------------------------------------------------------------------------------------------
def verdict_cell(check: Monotonicity) -> str:
    """``↑ ✓`` (as it must), ``↓ ✗ (must ↑)``, or the direction alone where none is expected."""
    text = ARROWS[check.observed]
    if check.expected is None:
        return text
    return f"{text} ✓" if check.as_expected else f"{text} ✗ (must {ARROWS[check.expected]})"


def metric_groups(checks: Sequence[Monotonicity]) -> list[list[str]]:
    """The checks' metrics in groups of at most :data:`METRICS_PER_TABLE`, so that each table fits the page."""
    metrics = list(dict.fromkeys(check.metric for check in checks))
    return [metrics[start:start + METRICS_PER_TABLE] for start in range(0, len(metrics), METRICS_PER_TABLE)]


def monotonicity_table(checks: Sequence[Monotonicity], degradations: Sequence[Degradation] = DEGRADATIONS) -> str:
    """Markdown: what each degradation does at which strengths, then one row per degradation and a column per
    metric (at most :data:`METRICS_PER_TABLE` a table), the direction each metric moved in.

    ↑ rises, ↓ falls, ↕ not monotone, – flat; ✓ where it moves as it must, ✗ where it does not; no mark
    where the metric need not move one way.
    """
    titles = {d.name: d.title for d in degradations}
    names = list(dict.fromkeys(check.degradation for check in checks))
    legend = ["| degradation | what grows | strengths |", "|---|---|---|"]
    for name in names:
        strengths = next(check.strengths for check in checks if check.degradation == name)
        legend.append(f"| {name} | {titles.get(name, name)} | {', '.join(f'{s:g}' for s in strengths)} |")
    tables = ["\n".join(legend)]
    for metrics in metric_groups(checks):
        lines = ["| degradation | " + " | ".join(label(m) for m in metrics) + " |", "|---|" + "---|" * len(metrics)]
        for name in names:
            mine = {check.metric: check for check in checks if check.degradation == name}
            lines.append(f"| {name} | " + " | ".join(verdict_cell(mine[m]) if m in mine else "" for m in metrics) + " |")
        tables.append("\n".join(lines))
    return "\n\n".join(tables)


def values_table(checks: Sequence[Monotonicity]) -> str:
    """Markdown: the mean of every metric at every strength of every degradation (the numbers behind the
    verdicts), at most :data:`METRICS_PER_TABLE` metrics a table."""
    tables = []
    for metrics in metric_groups(checks):
        lines = ["| degradation | strength | " + " | ".join(label(m) for m in metrics) + " |",
                 "|---|---|" + "---|" * len(metrics)]
        for name in dict.fromkeys(check.degradation for check in checks):
            mine = {check.metric: check for check in checks if check.degradation == name}
            first = next(iter(mine.values()))
            for index, strength in enumerate(first.strengths):
                cells = [number(mine[m].means[index]) if m in mine else "" for m in metrics]
                lines.append(f"| {name} | {strength:g} | " + " | ".join(cells) + " |")
        tables.append("\n".join(lines))
    return "\n\n".join(tables)


def summary_sentences(checks: Sequence[Monotonicity]) -> list[str]:
    """One sentence per degradation saying which required directions held, generated from the checks."""
    sentences = []
    for name in dict.fromkeys(check.degradation for check in checks):
        required = [c for c in checks if c.degradation == name and c.expected is not None]
        failed = [c for c in required if not c.as_expected]
        held = len(required) - len(failed)
        text = f"{name}: {held} of {len(required)} metrics move as they must"
        if failed:
            text += " (not: " + ", ".join(f"{label(c.metric)} {c.observed}" for c in failed) + ")"
        sentences.append(text + ".")
    return sentences


def degradation_markdown(rows: Sequence[DegradationRow], checks: Sequence[Monotonicity]) -> str:
    """The degradations for a results page: how they were scored, the directions, the means, one sentence each."""
    draws = len({row.draw for row in rows})
    images = rows[0].images if rows else 0
    how = (
        f"Real images degraded at increasing strengths, {images} per set, each set scored against the benchmark's "
        f"reference exactly as a generator's {images} samples are; {draws} draw{'s' * (draws != 1)} per strength, "
        "the tables give the mean (every draw: `metric_validation.csv`; `gnbench validate-metrics SPEC` recomputes "
        "them). ↑ rises, ↓ falls, ↕ not monotone, – flat with the strength; ✓ where a metric moves as it must, ✗ where "
        "it does not, no mark where it need not move one way."
    )
    sentences = "\n".join(f"- {sentence}" for sentence in summary_sentences(checks))
    means = details("The means behind the directions", values_table(checks))
    return "\n\n".join([how, monotonicity_table(checks), sentences, means])


def write_degradations(rows: Sequence[DegradationRow], checks: Sequence[Monotonicity], folder: Path) -> list[Path]:
    """``metric_validation.csv`` (every scored set) and ``metric_monotonicity.csv`` (the checks) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / VALIDATION_CSV, folder / MONOTONICITY_CSV]
    write_csv([row.as_dict() for row in rows], paths[0])
    write_csv([check.as_dict() for check in checks], paths[1])
    return paths


# -- from a config ---------------------------------------------------------------------------------
def real_images(dataset: ImageDataset, held_out: ImageDataset | None) -> RealImages:
    """The training images and labels of ``dataset`` and the images of its held-out split."""
    images, labels = dataset_tensors(dataset)
    if held_out is None:
        return RealImages(images, labels, dataset.num_classes)
    return RealImages(images, labels, dataset.num_classes, *dataset_tensors(held_out))


def validate_metrics(
    config: Config,
    metrics: Sequence[str] | None = None,
    *,
    draws: int = 3,
    seed: int = 0,
    device: str | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[list[DegradationRow], list[Monotonicity]]:
    """Degrade the real images of ``config``'s data set and score them with its evaluation settings.

    ``metrics``: the metrics to compute (default ``eval.metrics``), for example a bench spec's;
    ``device``: default ``train.device`` (``auto``: CUDA where present). ``copies`` is left out where
    the data set has no held-out split, or scores against it (``reference_split``). Returns the
    scored rows (one per degradation, strength and draw) and the monotonicity checks.
    """
    settings = config.eval.model_copy(update={"metrics": list(metrics or config.eval.metrics)})
    dataset, _ = build_dataset_and_models(config)
    reference = build_reference_dataset(config, dataset)
    evaluator = Evaluator(dataset, settings, device or evaluation_device(config), reference_data=reference)
    # where the held-out split is the reference itself, mixing it with training images is no test of memorisation
    real = real_images(dataset, held_out_split(config, dataset) if reference is None else None)
    rows = degradation_rows(real, evaluator, draws=draws, seed=seed, log=log)
    checks = scored_monotonicity(rows, settings.metrics)
    return rows, checks


# -- in a benchmark --------------------------------------------------------------------------------
def check_benchmark(
    cells: Sequence[Cell], metrics: Sequence[str], generator: str, root: Path, log: Callable[[str], None] = print
) -> list[Path]:
    """The checks of a spec with ``validate_metrics``, written to ``root`` for its page.

    The degradations are scored once per output folder (``metric_validation.csv`` is reused while it
    has the spec's metrics at its sample count); the memorisation check runs on the finished runs'
    last checkpoints (the stage of the primary comparison), for ``generator``.
    """
    config = cells[0].config
    cached = root / VALIDATION_CSV
    previous = read_csv(cached) if cached.is_file() else []
    if previous and set(metrics) <= set(previous[0]) and previous[0]["images"] == config.eval.num_samples:
        rows = [DegradationRow.from_dict(row) for row in previous]
    else:
        log(f"scoring degraded real images with the benchmark's metrics (cached in {cached})")
        rows, _ = validate_metrics(config, metrics)
    written = write_degradations(rows, scored_monotonicity(rows, metrics), root)
    runs = memorisation.runs_by_method(cells)
    if runs:
        found = memorisation.check_runs(runs, checkpoint="latest", generators=[generator])
        written.append(memorisation.write_memorisation(found, root))
    return written


def checks_markdown(degradations: Sequence[dict[str, Any]], found: Sequence[dict[str, Any]], metrics: Sequence[str]) -> str:
    """The page sections of a benchmark's checks, from the rows of its published CSVs (empty without them)."""
    sections = []
    if degradations:
        rows = [DegradationRow.from_dict(row) for row in degradations]
        checks = scored_monotonicity(rows, metrics)
        sections += ["## Do the metrics rank known degradations?", degradation_markdown(rows, checks)]
    if found:
        rows = [memorisation.MemorisationRow.from_dict(row) for row in found]
        sections += ["## Memorisation", memorisation.memorisation_markdown(rows, checkpoint="last")]
    return "\n\n".join(sections)


# -- the command -----------------------------------------------------------------------------------
def command_validate_metrics(args: argparse.Namespace) -> None:
    def log(line: str) -> None:
        print(line, file=sys.stderr)

    if args.draws < 1:
        raise GnPluginError(f"--draws must be at least 1, got {args.draws}")
    spec_path = find_spec(args.spec)
    spec = load_spec(spec_path)
    cells = expand(spec, spec_path, output_root(spec, args.out))
    root = cells[0].root
    started = time.perf_counter()
    rows, checks = validate_metrics(cells[0].config, spec.metrics, draws=args.draws, seed=args.seed, log=log)
    written = write_degradations(rows, checks, root)
    print(degradation_markdown(rows, checks))
    log(f"degradations: {time.perf_counter() - started:.0f} s; wrote {', '.join(map(str, written))}")
    runs = memorisation.runs_by_method(cells)
    if not runs:
        log(f"no finished run under {root}: the memorisation check needs the benchmark's runs")
        return
    started = time.perf_counter()
    found = memorisation.check_runs(runs, checkpoint=args.checkpoint, generators=args.generators, log=log)
    path = memorisation.write_memorisation(found, root)
    print("", memorisation.memorisation_markdown(found, checkpoint=args.checkpoint), sep="\n")
    log(f"memorisation: {time.perf_counter() - started:.0f} s; wrote {path}")


def add_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "validate-metrics",
        help="score degraded real images as a benchmark scores samples (do its metrics rank them?) and check "
        "its finished runs for copies of training images",
    )
    parser.add_argument("spec", help="benchmark spec (YAML), or the name of a shipped one (digits)")
    parser.add_argument("--out", help="the benchmark's output folder (default: the spec's); the CSVs go there")
    parser.add_argument("--draws", type=int, default=3, help="independent draws of every degraded set")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first draw")
    parser.add_argument("--checkpoint", choices=["best", "latest"], default="best", help="the runs' checkpoint")
    parser.add_argument("--generators", nargs="+", choices=["ema", "raw"], default=["ema"], help="generators checked")
    parser.set_defaults(handler=command_validate_metrics)
