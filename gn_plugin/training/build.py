"""Building a run from its config: the runner's one door to the registry, and :func:`setup`.

Every component a config names (data set, models, norm, loss, regularizers) is created here through
:func:`gn_plugin.registry.create`; nothing else in training names a concrete component. What the
loop may do with them (cheap exact steps, one fused D pass) is decided from the capabilities the
norm and regularizers declare (:mod:`gn_plugin.norms.base`, :mod:`gn_plugin.regularizers.base`).
"""

from __future__ import annotations

import copy
import functools
import json
from typing import Any

import torch
from torch import nn

from gn_plugin.config import Config
from gn_plugin.data.base import DatasetFiles, ImageDataset
from gn_plugin.errors import GnPluginError
from gn_plugin.evaluation.assets import Asset, data_asset, evaluation_assets
from gn_plugin.models.base import GANPair, count_parameters
from gn_plugin.norms.base import cheap_scorer, cheap_step_problem, has_per_sample_scores
from gn_plugin.registry import create, get
from gn_plugin.regularizers.base import declare_mirror_symmetry, scores_views
from gn_plugin.training import distributed
from gn_plugin.training.cuda_graph import (
    CapturedStep,
    check_cuda_graph,
    make_capturable,
)
from gn_plugin.training.data_stream import BatchStream, decoded_bytes, keeps_on_device
from gn_plugin.training.run_dir import RunFiles
from gn_plugin.training.state import Training


def build_dataset(config: Config, split: str = "train", resolution: int | None = None) -> ImageDataset:
    """The data set ``data.name`` at ``resolution`` (default: ``data.resolution``, else the set's own)."""
    data = config.data
    return create(
        "dataset", data.name, root=data.root, resolution=resolution or data.resolution, split=split, **data.options
    )


def build_reference_dataset(config: Config, dataset: ImageDataset) -> ImageDataset | None:
    """The split samples are scored against where the data set names one (``reference_split``), at
    ``dataset``'s resolution; None: they are scored against ``dataset`` itself."""
    if dataset.reference_split is None:
        return None
    return build_dataset(config, split=dataset.reference_split, resolution=dataset.resolution)


def held_out_split(config: Config, dataset: ImageDataset) -> ImageDataset | None:
    """The data set's ``test`` split at ``dataset``'s resolution, or None where it has none."""
    try:
        return build_dataset(config, split="test", resolution=dataset.resolution)
    except GnPluginError:
        return None


def evaluation_device(config: Config) -> str:
    """Where to score outside a run (floors, metric checks): ``train.device``, ``auto`` being CUDA where present."""
    if config.train.device != "auto":
        return config.train.device
    return "cuda" if torch.cuda.is_available() else "cpu"


def build_models(config: Config, dataset: ImageDataset) -> GANPair:
    """G and the raw D of ``model.name``, matched to the data set's channels and classes."""
    model = config.model
    num_classes = dataset.num_classes if model.conditional else 0
    if model.conditional and num_classes == 0:
        raise GnPluginError(f"model.conditional: dataset '{dataset.name}' has no labels")
    return create(
        "model", model.name, z_dim=model.z_dim, num_classes=num_classes, width=model.width,
        channels=dataset.channels, **model.options,
    )


def build_dataset_and_models(config: Config) -> tuple[ImageDataset, GANPair]:
    """Data set and models of a config, with the data set at the generator's resolution (data sets read
    from images, ``folder`` and ``lmdb``, need one to be created at all)."""
    dataset = build_dataset(config, resolution=config.data.resolution or model_resolution(config))
    pair = build_models(config, dataset)
    resolution = pair.generator.resolution
    if dataset.resolution != resolution:
        if config.data.resolution is not None:
            raise GnPluginError(
                f"data.resolution: model '{config.model.name}' makes {resolution} px images but "
                f"data.resolution is {config.data.resolution}"
            )
        dataset = build_dataset(config, resolution=resolution)
    return dataset, pair


def model_resolution(config: Config) -> int:
    """The resolution of ``model.name``'s images, read from a generator built on the meta device (no memory)."""
    model = config.model
    return _generator_resolution(model.name, model.z_dim, model.width, json.dumps(model.options, sort_keys=True))


@functools.lru_cache(maxsize=None)
def _generator_resolution(name: str, z_dim: int, width: float, options: str) -> int:
    def build() -> GANPair:
        return create("model", name, z_dim=z_dim, num_classes=0, width=width, channels=3, **json.loads(options))

    try:
        with torch.device("meta"):
            return build().generator.resolution
    except GnPluginError as exc:  # the registry names the factory's own failure and keeps it as the cause
        if not isinstance(exc.__cause__, (NotImplementedError, RuntimeError)):
            raise
        return build().generator.resolution  # a plugin's model that reads values while it initialises


def dataset_needs(config: Config, resolution: int, split: str = "train") -> DatasetFiles:
    """The files ``data.name`` reads and how it is scored: its ``required_files`` hook, without creating it;
    a data set without the hook reads no file of its own and is created to read its attributes."""
    data = config.data
    declare = getattr(get("dataset", data.name), "required_files", None)
    if declare is None:
        dataset = build_dataset(config, split, resolution)
        return DatasetFiles(
            metric_space=dataset.metric_space, cleanfid_reference=dataset.cleanfid_reference,
            reference_split=dataset.reference_split,
        )
    # neither downloading, nor the resize mode, nor mirror symmetry changes which files are read
    ignored = ("download", "resize", "mirror_symmetric")
    options = {key: value for key, value in data.options.items() if key not in ignored}
    try:
        return declare(root=data.root, resolution=resolution, split=split, **options)
    except TypeError as exc:
        raise GnPluginError(f"dataset '{data.name}': required_files: {exc}") from None


def required_assets(config: Config, *, evaluation: bool = True) -> list[Asset]:
    """Every file a run of ``config`` reads: the data set's, then (``evaluation``) what scoring it needs,
    nothing without metrics."""
    resolution = model_resolution(config)
    needs = dataset_needs(config, resolution)
    files = [data_asset(config.data.name, required) for required in needs.files]
    if not evaluation:
        return files
    split = needs.reference_split  # samples scored against another split: that split's statistics
    scored = dataset_needs(config, resolution, split) if split else needs
    return files + evaluation_assets(scored, config.eval, config.data.name, resolution, split=split)


def build_norm(config: Config, discriminator: nn.Module) -> nn.Module:
    """The norm's wrapper around the raw discriminator."""
    return create("norm", config.norm.name, discriminator, **config.norm.options)


def build_loss(config: Config):
    """The adversarial loss object (``d_loss``, ``g_loss``)."""
    return create("loss", config.loss.name, **config.loss.options)


def build_regularizers(config: Config, wrapper: nn.Module, dataset: ImageDataset) -> dict[str, object]:
    """Regularizers by display name: those the config lists plus those the norm implies (GN-CR), each
    told whether ``dataset`` is mirror-symmetric (so that an augmentation mirrors only where it may)."""
    regularizers = {spec.name: create("regularizer", spec.name, **spec.options) for spec in config.regularizers}
    for implied in getattr(wrapper, "implied_regularizers", []):
        regularizers[f"{config.norm.name}:{type(implied).__name__}"] = implied
    declare_mirror_symmetry(regularizers.values(), dataset.mirror_symmetric)
    return regularizers


def flips_real_images(config: Config, dataset: ImageDataset) -> bool:
    """Whether training flips the real images: ``data.hflip`` on, or auto on a mirror-symmetric data set."""
    return config.data.hflip == "on" or (config.data.hflip == "auto" and dataset.mirror_symmetric)


def describe_mirroring(config: Config, dataset: ImageDataset, regularizers: dict[str, Any]) -> list[str]:
    """Lines for ``log.txt``: whether the data set is mirror-symmetric, and what flips its images because of it.

    A flip forced on a data set that is not mirror-symmetric is a warning line.
    """
    declared = "is mirror-symmetric" if dataset.mirror_symmetric else "is not mirror-symmetric"
    flips = flips_real_images(config, dataset)
    lines = [
        f"data '{dataset.name}' {declared}: real images {'flipped' if flips else 'not flipped'} "
        f"(data.hflip {config.data.hflip})"
    ]
    for name, regularizer in regularizers.items():
        if hasattr(regularizer, "flips"):
            hflip = getattr(regularizer, "hflip", None)
            lines.append(
                f"{name}: augmentation {'mirrors' if regularizer.flips else 'does not mirror'}"
                + (f" (hflip {hflip})" if hflip else "")
            )
    if not dataset.mirror_symmetric:
        forced = ["data.hflip on"] * flips + [
            name for name, regularizer in regularizers.items() if getattr(regularizer, "flips", False)
        ]
        if forced:
            lines.append(
                f"warning: {', '.join(forced)} mirrors '{dataset.name}', which is not mirror-symmetric: "
                "D sees mirrored images as real"
            )
    return lines


def describe_models(pair: GANPair) -> str:
    """One line with the parameter counts of G and D."""
    g, d = count_parameters(pair.generator), count_parameters(pair.discriminator)
    return f"G {g / 1e6:.3f} M parameters, D {d / 1e6:.3f} M parameters"


# -- what the loop may do with them ----------------------------------------------------------------
def use_cheap_step(config: Config, wrapper: nn.Module, step: str) -> bool:
    """Whether ``train.cheap_<step>_step`` (auto/on/off) applies to this norm, D and precision.

    ``step`` is ``generator`` or ``discriminator``; the norm must declare ``cheap_<step>_scores``
    and report no problem for the wrapped D. ``on`` where it does not apply is a one-line error.
    """
    choice = getattr(config.train, f"cheap_{step}_step")
    if cheap_scorer(wrapper, step) is None:
        problem = f"norm '{config.norm.name}' has no cheap {'generator' if step == 'generator' else 'D'} step"
    else:
        problem = cheap_step_problem(wrapper, step)
    if problem is None and step == "discriminator" and config.train.precision == "bf16":
        problem = "not available with train.precision=bf16"  # autocast would cast inside the recorded layer calls
    if choice == "on" and problem:
        raise GnPluginError(f"train.cheap_{step}_step: {problem}")
    return choice != "off" and problem is None


def fuses_views(config: Config, wrapper: nn.Module, regularizers: dict[str, Any]) -> bool:
    """Whether the regularizers' augmented views can join the D step's one pass without changing a number.

    The norm declares per-sample scores (scoring ``cat([real, fake, views])`` equals separate calls) and
    every regularizer scores a view (``augment``/``from_scores``), so its augmentation draws the same
    random numbers as in the separate pass (nothing draws between the two places).
    """
    return (
        config.train.fuse_consistency
        and has_per_sample_scores(wrapper)
        and bool(regularizers)
        and all(scores_views(r) for r in regularizers.values())
    )


# -- a whole run -----------------------------------------------------------------------------------
def resolve_device(name: str, group: distributed.ProcessGroup) -> torch.device:
    """``auto`` means this process's GPU when there is one, else the CPU; an absent GPU is a one-line error."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device("cuda", group.local_rank) if name == "cuda" else torch.device(name)
    except RuntimeError:
        raise GnPluginError(f"train.device: unknown device '{name}'") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise GnPluginError(f"train.device: '{name}' but no CUDA GPU is available (use cpu or auto)")
        if (device.index or 0) >= count:
            raise GnPluginError(f"train.device: '{name}' but only {count} CUDA GPU{'s' * (count > 1)} visible")
    return device


def check_batch_sizes(config: Config, group: distributed.ProcessGroup) -> None:
    for key in ("batch_size_d", "batch_size_g"):
        if getattr(config.train, key) % group.world_size:
            raise GnPluginError(f"train.{key}: {getattr(config.train, key)} does not divide over {group.world_size} processes")


def memory_format(config: Config) -> torch.memory_format:
    """NHWC with ``train.channels_last``, else PyTorch's default NCHW."""
    return torch.channels_last if config.train.channels_last else torch.contiguous_format


def check_components(config: Config, dataset: ImageDataset | None = None) -> None:
    """Build the models, the norm, the loss and the regularizers of ``config`` once, without allocating them.

    A bad option fails here in one line, before anything runs (``gnbench bench`` checks every cell so).
    The models are built on PyTorch's ``meta`` device; ``dataset`` defaults to building the config's.
    """
    dataset = dataset or build_dataset(config)
    with torch.device("meta"):
        pair = build_models(config, dataset)
        build_regularizers(config, build_norm(config, pair.discriminator), dataset)
    build_loss(config)


def setup(config: Config, files: RunFiles, group: distributed.ProcessGroup) -> Training:
    """Build data, models, norm, loss, regularizers, optimisers and the data stream from ``config``.

    Everything that can fail on a bad config fails here, before a step runs; nothing is written.
    """
    check_batch_sizes(config, group)
    device = resolve_device(config.train.device, group)
    torch.manual_seed(config.train.seed)
    dataset, pair = build_dataset_and_models(config)
    generator = pair.generator.to(device, memory_format=memory_format(config))
    discriminator = build_norm(config, pair.discriminator).to(device, memory_format=memory_format(config))
    regularizers = build_regularizers(config, discriminator, dataset)
    loss = build_loss(config)
    cheap_generator_step = use_cheap_step(config, discriminator, "generator")
    cheap_discriminator_step = use_cheap_step(config, discriminator, "discriminator")
    generator_ema = copy.deepcopy(generator).eval().requires_grad_(False)
    betas = config.train.betas
    optimizer_g = torch.optim.Adam(generator.parameters(), lr=config.train.lr_g, betas=betas)
    optimizer_d = torch.optim.Adam(discriminator.parameters(), lr=config.train.lr_d, betas=betas)
    if config.train.cuda_graph:
        check_cuda_graph(device, group.world_size)
        make_capturable(optimizer_d, device)  # before the schedulers read the lr
    schedulers = []
    if config.train.lr_decay == "linear":
        decay = lambda step: 1.0 - step / config.train.steps  # noqa: E731 (per G step, to 0)
        schedulers = [torch.optim.lr_scheduler.LambdaLR(o, decay) for o in (optimizer_g, optimizer_d)]
    on_device = keeps_on_device(config.data.on_device, dataset, device, config.data.on_device_limit_mib)
    stream = BatchStream(
        dataset, config.train.batch_size_d, config.train.seed, device,
        num_workers=config.data.num_workers, shard=group.shard(config.train.batch_size_d), on_device=on_device,
    )
    return Training(
        config=config, files=files, group=group, device=device, dataset=dataset,
        generator=generator, generator_ema=generator_ema, discriminator=discriminator,
        loss=loss, regularizers=regularizers, hflip=flips_real_images(config, dataset),
        optimizer_g=optimizer_g, optimizer_d=optimizer_d, schedulers=schedulers, stream=stream,
        cheap_generator_step=cheap_generator_step, cheap_discriminator_step=cheap_discriminator_step,
        fused_views=fuses_views(config, discriminator, regularizers),
        captured_discriminator_step=CapturedStep(device) if config.train.cuda_graph else None,
    )


def describe(t: Training) -> list[str]:
    """Lines for ``log.txt``: model sizes and components, and where the data is read from."""
    config, dataset = t.config, t.dataset
    pair = GANPair(t.generator, getattr(t.discriminator, "discriminator", t.discriminator))
    held = t.stream.on_device
    return [
        f"{config.model.name}: {describe_models(pair)}; norm {config.norm.name}, loss {config.loss.name}",
        f"data '{config.data.name}': {len(dataset)} images, " + (
            f"held on {t.device} ({decoded_bytes(dataset) / 2**20:.0f} MiB)" if held else "read by a DataLoader"
        ),
        *describe_mirroring(config, dataset, t.regularizers),
    ]
