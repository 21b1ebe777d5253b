"""Memorisation: are a generator's samples closer to the training images than fresh images of the same data are?

For every sample, the distance to its nearest training image; for every held-out image (the data
set's ``test`` split, which training never sees), the same. A generator that copies training images
puts its samples nearer the training set than held-out images are; one that makes new images of the
same distribution does not. Per run:

- ``median_ratio``: the median nearest-neighbour distance of the samples over that of the held-out
  images (1: as novel as fresh images; well below 1: copies; above 1: samples further from every
  training image than real images are, which is poor quality, not memorisation);
- ``closer_than_any_held_out``: the share of samples nearer a training image than every held-out
  image is. For samples as novel as the m held-out images it is 1 / (m + 1) in expectation
  (``expected_share``: by symmetry, a fresh image is the nearest of m + 1 with that probability);
- ``flagged``: that share is above ten times its expectation (for m = 360, 2.8 % of the samples).
  Fresh images exceed it with probability about (1 − 10 / (m + 1))^m ≈ e^−10.

Distances are Euclidean, in two spaces: ``pixels`` (the images as the data set holds them, in
[-1, 1]): a copy is a copy there, whatever a feature extractor makes of it; and ``features`` (the
metric space's features, the digits classifier's for digits): what FID and precision see, where
different images of one class can lie close together, so it flags more readily than pixels do.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gn_plugin.data.base import dataset_tensors
from gn_plugin.errors import GnPluginError
from gn_plugin.evaluation.evaluator import evaluation_sampler
from gn_plugin.evaluation.features import FeatureExtractor, build_extractor
from gn_plugin.experiments.report import write_csv
from gn_plugin.experiments.spec import Cell
from gn_plugin.experiments.tables import number
from gn_plugin.training.build import evaluation_device, held_out_split
from gn_plugin.training.saved_run import load_run

SPACES = ("pixels", "features")
FLAG_FACTOR = 10
HELD_OUT = "held-out images"
MEMORISATION_CSV = "memorisation.csv"
BLOCK = 1024


def nearest_distances(queries: Tensor, references: Tensor) -> Tensor:
    """Euclidean distance of each query row to its nearest reference row, a block of queries at a time."""
    queries, references = queries.flatten(1).double(), references.flatten(1).double()
    return torch.cat([torch.cdist(block, references).min(dim=1).values for block in queries.split(BLOCK)])


@dataclass(frozen=True)
class MemorisationRow:
    """How near one set of images (a run's samples, or the held-out images) lies to the training images."""

    method: str
    run: str
    generator: str
    space: str
    images: int
    held_out_images: int
    median_distance: float
    median_ratio: float
    closer_than_any_held_out: float
    expected_share: float
    flagged: bool

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> MemorisationRow:
        """A row of ``memorisation.csv`` as :func:`~gn_plugin.experiments.report.read_csv` reads it."""
        return cls(
            row["method"], row["run"] or "", row["generator"] or "", row["space"], int(row["images"]),
            int(row["held_out_images"]), float(row["median_distance"]), float(row["median_ratio"]),
            float(row["closer_than_any_held_out"]), float(row["expected_share"]), row["flagged"] == "True",
        )


def memorisation_row(
    samples: Tensor, training: Tensor, held_out: Tensor, *, method: str, run: str = "", generator: str = "",
    space: str = "pixels",
) -> MemorisationRow:
    """Nearest-training-image distances of ``samples`` against those of ``held_out`` (all in one space)."""
    if len(held_out) == 0:
        raise GnPluginError("the memorisation check needs held-out images (a data set with a test split)")
    sample_distances = nearest_distances(samples, training)
    held_out_distances = nearest_distances(held_out, training)
    share = float((sample_distances < held_out_distances.min()).double().mean())
    expected = 1 / (len(held_out) + 1)
    median = float(sample_distances.median())
    return MemorisationRow(
        method, run, generator, space, len(samples), len(held_out), median, median / float(held_out_distances.median()),
        share, expected, share > FLAG_FACTOR * expected,
    )


def in_space(space: str, images: Tensor, extractor: FeatureExtractor | None) -> Tensor:
    """``images`` as points of ``space``: their pixels, or the extractor's features."""
    if space == "pixels":
        return images.flatten(1)
    if space == "features" and extractor is not None:
        with torch.no_grad():
            return torch.cat([extractor(batch)[0].float().cpu() for batch in images.split(500)])
    raise GnPluginError(f"unknown space '{space}' (choose {', '.join(SPACES)})")


def check_samples(
    samples: Tensor, training: Tensor, held_out: Tensor, *, method: str, run: str = "", generator: str = "",
    spaces: Sequence[str] = SPACES, extractor: FeatureExtractor | None = None,
) -> list[MemorisationRow]:
    """:func:`memorisation_row` of ``samples`` in each of ``spaces`` (``features`` needs ``extractor``)."""
    return [
        memorisation_row(
            in_space(space, samples, extractor), in_space(space, training, extractor),
            in_space(space, held_out, extractor), method=method, run=run, generator=generator, space=space,
        )
        for space in spaces
    ]


def runs_by_method(cells: Sequence[Cell]) -> dict[str, list[Path]]:
    """The finished runs of a benchmark's cells, grouped by method (``Cell.group``: method and grid values)."""
    groups: dict[str, list[Path]] = {}
    for cell in cells:
        if cell.finished:
            groups.setdefault(cell.group, []).append(cell.run_dir)
    return groups


def check_runs(
    runs: Mapping[str, Sequence[Path]],
    *,
    checkpoint: str = "best",
    generators: Sequence[str] = ("ema",),
    spaces: Sequence[str] = SPACES,
    device: str | None = None,
    log: Callable[[str], None] | None = None,
) -> list[MemorisationRow]:
    """The memorisation check of every run in ``runs`` (method -> run directories), plus the held-out baseline.

    Each run's generators (``checkpoint``: ``best`` or ``latest``) draw ``eval.num_samples`` images
    exactly as its evaluation draws them (the same z, ``eval.generator_mode``); they are compared with
    the run's training images and its data set's held-out split; features are extracted on ``device``
    (default ``train.device``, ``auto``: CUDA where present). The first rows are the baseline:
    the held-out images themselves (ratio 1, share 0 by construction; their median distance is the
    scale the ratios are relative to).
    """
    rows: list[MemorisationRow] = []
    prepared: dict[str, tuple[Tensor, Tensor, FeatureExtractor | None]] = {}
    for method, run_dirs in runs.items():
        for run_dir in run_dirs:
            run = load_run(Path(run_dir), checkpoint)
            config = run.config
            key = repr((config.data.model_dump(), run.dataset.resolution))
            if key not in prepared:
                held_out = held_out_split(config, run.dataset)
                if held_out is None:
                    raise GnPluginError(
                        f"{run_dir}: data set '{config.data.name}' has no held-out split ('test'), which the "
                        "memorisation check compares samples with"
                    )
                extractor = (
                    build_extractor(run.dataset.metric_space, inception_path=config.eval.inception_path,
                                    device=device or evaluation_device(config), mode=config.eval.mode,
                                    pytorch_inception_path=config.eval.pytorch_inception_path)
                    if "features" in spaces else None
                )
                prepared[key] = (dataset_tensors(run.dataset)[0], dataset_tensors(held_out)[0], extractor)
                if not rows:
                    rows += check_samples(prepared[key][1], prepared[key][0], prepared[key][1], method=HELD_OUT,
                                          spaces=spaces, extractor=extractor)
            training, held_out, extractor = prepared[key]
            for generator_name in generators:
                generator = run.generator_ema if generator_name == "ema" else run.generator
                samples = evaluation_sampler(generator, config, run.device)(config.eval.num_samples).cpu()
                found = check_samples(samples, training, held_out, method=method, run=Path(run_dir).name,
                                      generator=generator_name, spaces=spaces, extractor=extractor)
                rows += found
                if log:
                    log(f"{method} {Path(run_dir).name} {generator_name}: " + ", ".join(
                        f"{r.space} ratio {r.median_ratio:.3f} share {r.closer_than_any_held_out:.4f}" for r in found))
    return rows


# -- text ------------------------------------------------------------------------------------------
def method_summaries(rows: Sequence[MemorisationRow]) -> list[dict[str, Any]]:
    """Per method, generator and space: runs, mean and range of the median ratio, mean and largest share, flags."""
    summaries = []
    keys = dict.fromkeys((r.method, r.generator, r.space) for r in rows)
    for method, generator, space in keys:
        mine = [r for r in rows if (r.method, r.generator, r.space) == (method, generator, space)]
        ratios = [r.median_ratio for r in mine]
        shares = [r.closer_than_any_held_out for r in mine]
        summaries.append({
            "method": method, "generator": generator, "space": space, "runs": len(mine) if method != HELD_OUT else 0,
            "median_distance": float(np.mean([r.median_distance for r in mine])),
            "median_ratio": float(np.mean(ratios)), "ratio_low": min(ratios), "ratio_high": max(ratios),
            "share": float(np.mean(shares)), "share_high": max(shares), "expected_share": mine[0].expected_share,
            "flagged": sum(r.flagged for r in mine),
        })
    return summaries


def memorisation_table(rows: Sequence[MemorisationRow]) -> str:
    """Markdown: a table per space; per method, how near the samples lie to the training images, against
    the held-out images."""
    tables = []
    for space in dict.fromkeys(r.space for r in rows):
        lines = [
            f"{space.capitalize()}:",
            "",
            "| method | generator | median distance to the nearest training image | ratio to held-out (range) "
            "| share nearer than any held-out image (largest) | flagged runs |",
            "|---|---|---|---|---|---|",
        ]
        for s in method_summaries([r for r in rows if r.space == space]):
            if s["method"] == HELD_OUT:
                lines.append(f"| {HELD_OUT} (baseline) | – | {number(s['median_distance'])} | 1 "
                             f"| 0 (fresh images: {s['expected_share']:.2%} expected) | – |")
                continue
            ratio = f"{number(s['median_ratio'])} ({number(s['ratio_low'])}–{number(s['ratio_high'])})"
            share = f"{s['share']:.2%} ({s['share_high']:.2%})"
            lines.append(f"| {s['method']} | {s['generator']} | {number(s['median_distance'])} | {ratio} | {share} "
                         f"| {s['flagged']} of {s['runs']} |")
        tables.append("\n".join(lines))
    return "\n\n".join(tables)


def memorisation_sentences(rows: Sequence[MemorisationRow]) -> list[str]:
    """Per space, which methods have flagged runs (or that none has), generated from ``rows``."""
    sentences = []
    for space in dict.fromkeys(r.space for r in rows if r.method != HELD_OUT):
        mine = [s for s in method_summaries(rows) if s["space"] == space and s["method"] != HELD_OUT]
        flagged = [s for s in mine if s["flagged"]]
        largest = max(s["share_high"] for s in mine)
        if flagged:
            text = "flagged: " + ", ".join(
                f"{s['method']} ({s['generator'] + ', ' if s['generator'] else ''}{s['flagged']} of {s['runs']} runs)"
                for s in flagged
            )
        else:
            expected = mine[0]["expected_share"]
            text = f"no run flagged (largest share {largest:.2%}, flagged above {FLAG_FACTOR} × {expected:.2%})"
        sentences.append(f"{space}: {text}.")
    return sentences


def memorisation_markdown(rows: Sequence[MemorisationRow], *, checkpoint: str = "best") -> str:
    """The memorisation check for a results page: how it was done, the table, one sentence per space."""
    held_out = rows[0].held_out_images if rows else 0
    samples = next((r.images for r in rows if r.method != HELD_OUT), 0)
    how = (
        f"Each run's {checkpoint} checkpoint draws {samples} samples as its evaluation draws them; each sample's "
        "Euclidean distance to its nearest training image is set against the same distance for the "
        f"{held_out} held-out images, which training never sees, in pixels and in the metric space's features. "
        "The ratio of the median "
        "distances is 1 for samples as novel as fresh images and well below 1 for copies; the share is that of "
        "samples nearer a training image than every held-out image is, and a run is flagged where it exceeds "
        f"{FLAG_FACTOR} times the share expected of fresh images (every run: `memorisation.csv`; "
        "`gnbench validate-metrics SPEC` recomputes it)."
    )
    sentences = "\n".join(f"- {sentence}" for sentence in memorisation_sentences(rows))
    return "\n\n".join([how, memorisation_table(rows), sentences])


def write_memorisation(rows: Sequence[MemorisationRow], folder: Path) -> Path:
    """``memorisation.csv`` (one row per run, generator and space, the baseline first) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / MEMORISATION_CSV
    write_csv([row.as_dict() for row in rows], path)
    return path
