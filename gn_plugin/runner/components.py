"""The runner's one door to the registry: build every component a config names."""

from __future__ import annotations


from torch import nn

from gn_plugin.data.base import ImageDataset
from gn_plugin.errors import GnPluginError
from gn_plugin.models.base import GANPair, count_parameters
from gn_plugin.registry import create
from gn_plugin.runner.config import Config


def build_dataset(config: Config, split: str = "train", resolution: int | None = None) -> ImageDataset:
    """The data set ``data.name`` at ``resolution`` (default: ``data.resolution``, else the set's own)."""
    data = config.data
    return create(
        "dataset", data.name, root=data.root, resolution=resolution or data.resolution, split=split, **data.options
    )


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
    """Data set and models of a config, with the data set at the generator's resolution."""
    dataset = build_dataset(config)
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


def build_norm(config: Config, discriminator: nn.Module) -> nn.Module:
    """The norm's wrapper around the raw discriminator."""
    return create("norm", config.norm.name, discriminator, **config.norm.options)


def build_loss(config: Config):
    """The adversarial loss object (``d_loss``, ``g_loss``)."""
    return create("loss", config.loss.name, **config.loss.options)


def build_regularizers(config: Config, wrapper: nn.Module) -> dict[str, object]:
    """Regularizers by display name: those the config lists plus those the norm implies (GN-CR)."""
    regularizers = {spec.name: create("regularizer", spec.name, **spec.options) for spec in config.regularizers}
    for implied in getattr(wrapper, "implied_regularizers", []):
        regularizers[f"{config.norm.name}:{type(implied).__name__}"] = implied
    return regularizers


def describe_models(pair: GANPair) -> str:
    """One line with the parameter counts of G and D."""
    g, d = count_parameters(pair.generator), count_parameters(pair.discriminator)
    return f"G {g / 1e6:.3f} M parameters, D {d / 1e6:.3f} M parameters"
