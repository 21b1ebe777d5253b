"""The Python API: open a trained run, draw samples, walk between latent vectors (re-exported as ``gn_plugin.*``).

::

    import gn_plugin

    run = gn_plugin.load_run("runs/digits-gn")     # config, raw and EMA generators, evaluations
    images = gn_plugin.sample(run, 64)              # [64, C, H, W] in [-1, 1]
    path = gn_plugin.interpolate(run, 0, 1, steps=10)

Images are tensors in [-1, 1] on the run's device, drawn under no_grad the way the run's evaluations
draw them (``eval.generator_mode``). ``generator="auto"`` is the generator that is meaningful at the
checkpoint's step: the raw one while the EMA has averaged fewer than three horizons, then the EMA.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor

from gn_plugin.errors import GnPluginError
from gn_plugin.evaluation.sampling import generate, image_grid, labelled_grid, slerp, stack_grids
from gn_plugin.training import saved_run
from gn_plugin.training.ema import ema_lags
from gn_plugin.training.saved_run import SavedRun

__all__ = ["SavedRun", "interpolate", "latents", "load_run", "sample", "write_samples"]


def load_run(run_dir: str | Path, checkpoint: str = "latest") -> SavedRun:
    """A run directory's config, raw and EMA generators (``generator``, ``generator_ema``, in eval mode) and
    evaluations (``evaluations``: the records of ``results.jsonl``), as of ``checkpoint`` (``latest`` or ``best``)."""
    if checkpoint not in ("latest", "best"):
        raise GnPluginError(f"checkpoint must be latest or best, got {checkpoint!r}")
    return saved_run.load_run(Path(run_dir), checkpoint)


def latents(run: SavedRun, n: int, seed: int | None = None) -> Tensor:
    """The ``n`` latent vectors z ~ N(0, I) [n, z_dim] that :func:`sample` draws with ``seed``.

    ``seed`` None: ``train.seed + 1``, the z of the run's own sample grids.
    """
    rng = torch.Generator(device=run.device).manual_seed(default_seed(run, seed))
    return torch.randn(n, run.generator.z_dim, device=run.device, generator=rng)


def sample(
    run: SavedRun,
    n: int = 64,
    seed: int | None = None,
    *,
    generator: str = "auto",
    classes: int | Sequence[int] | None = None,
) -> Tensor:
    """``n`` images of ``run``'s ``generator`` (``auto``, ``raw`` or ``ema``) at the z :func:`latents` draws.

    Without ``classes``: ``[n, C, H, W]`` (a conditional generator gets labels drawn at random after
    the z). With ``classes`` (a class or several, conditional models): ``n`` images per class, class
    after class, ``[len(classes) * n, C, H, W]``, the same ``n`` z for every class, so a column shows
    one z across the classes. In ``eval.generator_mode: train`` the batch is filled up to
    ``train.batch_size_g`` images (:func:`~gn_plugin.evaluation.sampling.generate`), so that BatchNorm
    sees the statistics of a training-sized batch even for one image.
    """
    if n < 1:
        raise GnPluginError(f"n must be at least 1, got {n}")
    _, model = run.pick_generator(generator)
    rng = torch.Generator(device=run.device).manual_seed(default_seed(run, seed))
    z = torch.randn(n, model.z_dim, device=run.device, generator=rng)
    if classes is None:
        labels = torch.randint(model.num_classes, (n,), device=run.device, generator=rng) if model.num_classes else None
    else:
        chosen = class_labels(run, classes)
        z, labels = z.repeat(len(chosen), 1), chosen.repeat_interleave(n)
    return generate(model, z, labels, mode=run.config.eval.generator_mode, fill_to=run.config.train.batch_size_g)


def interpolate(
    run: SavedRun,
    z0: Tensor | int,
    z1: Tensor | int,
    steps: int = 8,
    *,
    generator: str = "auto",
    label: int | None = None,
) -> Tensor:
    """``steps`` images along the great circle (slerp) from ``z0`` to ``z1``, ends included: ``[steps, C, H, W]``.

    ``z0``, ``z1``: latent vectors [z_dim], or seeds (the first z :func:`latents` draws with that seed).
    Slerp rather than a straight line: Gaussian z lie near the sphere of radius √z_dim, and a line's
    middle falls inside it, where G never saw a z. ``label``: the class, for a conditional generator.
    """
    if steps < 2:
        raise GnPluginError(f"steps must be at least 2 (the two ends), got {steps}")
    _, model = run.pick_generator(generator)
    ends = [latents(run, 1, z)[0] if isinstance(z, int) else z.to(run.device).reshape(-1) for z in (z0, z1)]
    for z in ends:
        if z.numel() != model.z_dim:
            raise GnPluginError(f"a latent vector of this run has {model.z_dim} values, got {z.numel()}")
    labels = None
    if model.num_classes:
        if label is None:
            raise GnPluginError(f"the generator is conditional ({model.num_classes} classes): give label=")
        labels = class_labels(run, [label]).repeat(steps)
    path = slerp(ends[0], ends[1], torch.linspace(0, 1, steps, device=run.device))
    return generate(model, path, labels, mode=run.config.eval.generator_mode, fill_to=run.config.train.batch_size_g)


def write_samples(
    run_dir: str | Path,
    *,
    checkpoint: str = "latest",
    out: str | Path | None = None,
    count: int = 64,
    generator: str = "auto",
    classes: Sequence[int] | None = None,
    interpolate: int | None = None,
    seed: int | None = None,
    log: Callable[[str], None] = print,
) -> Path:
    """Write a labelled PNG grid of a run's samples (``gnbench sample``); returns its path.

    ``generator``: ``auto`` (raw rows above EMA rows, as training's grids, once the EMA has warmed up;
    the raw generator alone before), ``both``, ``raw`` or ``ema``.
    ``classes``: a row per class (an empty list: every class). ``interpolate``: rows of that many images,
    each a slerp between two random z (one class per row, cycling through ``classes``, for a conditional
    generator). ``count``: images per generator.
    """
    from torchvision.utils import save_image

    run = load_run(run_dir, checkpoint)
    if generator == "auto":
        generator = "both" if run.pick_generator("auto")[0] == "ema" else "raw"
    names = ["raw", "ema"] if generator == "both" else [run.pick_generator(generator)[0]]
    log(f"sampling the {' and '.join(GENERATOR_LABELS[n] for n in names)} generator{'s' * (len(names) > 1)} of {run.describe()}")
    if run.ema_note():
        log(f"note: {run.ema_note()}")
    if classes is not None and not run.generator.num_classes:
        raise GnPluginError(f"{run_dir}: --classes needs a conditional model, and this one is not (model.conditional)")
    grids = []
    for name in names:
        label = f"{GENERATOR_LABELS[name]}, step {run.step}"
        if name == "ema" and ema_lags(run.step, run.config.train.ema):
            label += " (EMA still warming up)"
        images, per_row = grid_images(run, name, count, classes, interpolate, seed)
        grids.append(labelled_grid(image_grid(images, per_row), label))
    kind = "raw_ema" if generator == "both" else names[0]
    suffix = "_interpolate" if interpolate else "_classes" if classes is not None else ""
    path = Path(out) if out else run.files.samples / f"{run.checkpoint}_{kind}_step{run.step}{suffix}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(stack_grids(grids), path)
    return path


GENERATOR_LABELS = {"raw": "raw", "ema": "EMA"}


def grid_images(
    run: SavedRun, generator: str, count: int, classes: Sequence[int] | None, steps: int | None, seed: int | None
) -> tuple[Tensor, int]:
    """The images of one generator's block of :func:`write_samples` and how many go in a row."""
    chosen = list(classes) if classes else list(range(run.generator.num_classes)) if classes is not None else []
    if steps is not None:
        rows = max(1, count // steps)
        ends = latents(run, 2 * rows, seed)
        images = [
            interpolate(run, ends[2 * row], ends[2 * row + 1], steps, generator=generator,
                        label=chosen[row % len(chosen)] if chosen else random_class(run, seed, row))
            for row in range(rows)
        ]
        return torch.cat(images), steps
    if classes is not None:
        per_class = max(1, int(math.sqrt(count)))
        return sample(run, per_class, seed, generator=generator, classes=chosen), per_class
    return sample(run, count, seed, generator=generator), int(math.sqrt(count))


def random_class(run: SavedRun, seed: int | None, row: int) -> int | None:
    """A class for row ``row`` of an interpolation grid of a conditional generator (None: unconditional)."""
    if not run.generator.num_classes:
        return None
    rng = torch.Generator().manual_seed(default_seed(run, seed) + row)
    return int(torch.randint(run.generator.num_classes, (1,), generator=rng))


def class_labels(run: SavedRun, classes: int | Sequence[int]) -> Tensor:
    """``classes`` as a label tensor on the run's device, each checked against the generator's classes."""
    count = run.generator.num_classes
    if not count:
        raise GnPluginError("classes need a conditional generator, and this run's is not (model.conditional)")
    chosen = [classes] if isinstance(classes, int) else list(classes)
    if not chosen:
        raise GnPluginError("classes is empty")
    for label in chosen:
        if not 0 <= int(label) < count:
            raise GnPluginError(f"class {label} does not exist: the generator has classes 0 to {count - 1}")
    return torch.tensor([int(label) for label in chosen], device=run.device)


def default_seed(run: SavedRun, seed: int | None) -> int:
    return run.config.train.seed + 1 if seed is None else seed
