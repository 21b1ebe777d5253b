"""Architectures: the model contract, GN's preconditions (per sample, piecewise linear), sizes, labels."""

from __future__ import annotations

import pytest
import torch
from scipy import stats
from torch import Tensor, nn
from torch.nn.utils import parametrize

from gn_plugin import GnPluginError, GradNorm, create, list_components
from gn_plugin.models.base import GANPair, count_parameters
from gn_plugin.norms.base import uses_batch_statistics

MODELS = list_components("model")
NARROW = 0.125
BATCH = 3
# With the seeds below, piecewise-linear discriminators stay below these bounds by ≥ 10× and
# smooth ones exceed them by ≥ 4× (secant) and ≥ 10⁵× (Theorem 6 formula); see the activation test.
LINEAR_TOLERANCE = 1e-9
FORMULA_TOLERANCE = 1e-8


def build(name: str, width: float = NARROW, **options) -> GANPair:
    return create("model", name, width=width, **options)


def latents(generator: nn.Module, seed: int = 0) -> tuple[Tensor, Tensor | None]:
    rng = torch.Generator().manual_seed(seed)
    z = torch.randn(BATCH, generator.z_dim, generator=rng)
    y = torch.randint(generator.num_classes, (BATCH,), generator=rng) if generator.num_classes else None
    return z, y


# ResNet discriminators are fully convolutional with global pooling, so which functions they compute
# (piecewise linear, per sample) does not depend on the input size; the 128/256-px ones are probed at
# 64 px to keep the suite fast on CPU. Their native size is covered by the generator test.
PROBE_RESOLUTION = {"resnet128": 64, "resnet256": 64}


def images(
    generator: nn.Module, dtype: torch.dtype = torch.float64, size: int | None = None, seed: int = 1
) -> Tensor:
    rng = torch.Generator().manual_seed(seed)
    size = size or generator.resolution
    return torch.rand((BATCH, generator.channels, size, size), generator=rng, dtype=dtype) * 2 - 1


def probe(name: str, pair: GANPair) -> tuple[Tensor, Tensor | None]:
    """Random float64 images (at the probe size) and labels for ``pair``'s discriminator."""
    _, labels = latents(pair.generator)
    return images(pair.generator, size=PROBE_RESOLUTION.get(name)), labels


def input_gradient(discriminator: nn.Module, x: Tensor, y: Tensor | None) -> tuple[Tensor, Tensor]:
    """(f(x), ∇ₓf(x)) per sample."""
    x = x.detach().requires_grad_(True)
    scores = discriminator(x, y)
    (gradient,) = torch.autograd.grad(scores.sum(), x)
    return scores.detach(), gradient


def secant_deviation(discriminator: nn.Module, x: Tensor, y: Tensor | None, step: float = 1e-4) -> float:
    """max over samples of min over ±h of |(f(x±h·d) − f(x))/(±h) − <∇f, d>| / ‖∇f‖, unit directions d.

    Zero up to round-off when f is linear on at least one side of x (piecewise linear: a kink within
    h on both sides at once is all but impossible); about h·|dᵀHd| / (2‖∇f‖) on both sides when f
    is curved.
    """
    rng = torch.Generator().manual_seed(2)
    direction = torch.randn(x.shape, generator=rng, dtype=x.dtype)
    direction = direction / direction.flatten(1).norm(dim=1).view(-1, *[1] * (x.dim() - 1))
    _, gradient = input_gradient(discriminator, x, y)
    tangent = (gradient * direction).flatten(1).sum(dim=1)
    with torch.no_grad():
        secants = [(discriminator(x + h * direction, y) - discriminator(x, y)) / h for h in (step, -step)]
    deviation = torch.minimum(*[(secant - tangent).abs() for secant in secants])
    return (deviation / gradient.flatten(1).norm(dim=1)).max().item()


def gn_gradient_and_theorem_6(
    discriminator: nn.Module, x: Tensor, y: Tensor | None
) -> tuple[Tensor, Tensor]:
    """(∇ₓf̂ by autograd, Theorem 6's ‖∇f‖·∇f / (‖∇f‖ + |f|)²).

    The two agree exactly when the Hessian H of f satisfies H·∇f = 0, as it does for piecewise-linear f.
    """
    scores, gradient = input_gradient(discriminator, x, y)
    x = x.detach().requires_grad_(True)
    (gn_gradient,) = torch.autograd.grad(GradNorm(discriminator)(x, y).sum(), x)
    norm = gradient.flatten(1).norm(dim=1)
    return gn_gradient, gradient * (norm / (norm + scores.abs()) ** 2).view(-1, *[1] * (x.dim() - 1))


def relative_error(actual: Tensor, expected: Tensor) -> float:
    return ((actual - expected).norm() / expected.norm()).item()


@pytest.fixture(scope="module", params=MODELS)
def model(request) -> tuple[str, GANPair]:
    torch.manual_seed(0)
    pair = build(request.param)
    pair.discriminator.double()
    return request.param, pair


# -- the contract ---------------------------------------------------------------------------------


def test_generator_images_are_in_range_and_fit_the_discriminator(model):
    name, pair = model
    generator = pair.generator
    z, y = latents(generator)
    out = generator(z, y)
    assert out.shape == (BATCH, generator.channels, generator.resolution, generator.resolution), name
    assert out.abs().max() <= 1
    assert out.std() > 0  # not a constant image
    assert pair.discriminator(out.double(), y).shape == (BATCH,)


def test_discriminator_scores_each_sample_on_its_own(model):
    """One score per sample, and a sample's score does not depend on the rest of the batch.

    This is what lets GN take per-sample gradients from the batch sum (no BatchNorm, no minibatch-std).
    """
    name, pair = model
    discriminator = pair.discriminator
    assert uses_batch_statistics(discriminator) == [], name
    x, y = probe(name, pair)
    batched = discriminator(x, y)
    assert batched.shape == (BATCH,)
    one_by_one = torch.cat(
        [discriminator(x[i : i + 1], None if y is None else y[i : i + 1]) for i in range(BATCH)]
    )
    torch.testing.assert_close(batched, one_by_one)


def test_default_discriminators_are_piecewise_linear_functions(model):
    """The flag is set, and the function really is locally linear (finite differences in float64)."""
    name, pair = model
    assert pair.discriminator.piecewise_linear is True, name
    assert secant_deviation(pair.discriminator, *probe(name, pair)) < LINEAR_TOLERANCE


def test_gradient_normalized_discriminator_obeys_theorem_6(model):
    """|f̂| < 1 on random inputs, ∇ₓf̂ has Theorem 6's closed form, and so ‖∇ₓf̂‖ ≤ 1."""
    name, pair = model
    x, y = probe(name, pair)
    assert GradNorm(pair.discriminator)(x, y).abs().max() < 1
    gn_gradient, theorem_6 = gn_gradient_and_theorem_6(pair.discriminator, x, y)
    assert relative_error(gn_gradient, theorem_6) < FORMULA_TOLERANCE
    assert gn_gradient.flatten(1).norm(dim=1).max() <= 1 + 1e-12


def test_unconditional_models_ignore_labels_and_conditional_ones_require_them(model):
    name, pair = model
    x, _ = probe(name, pair)
    z, _ = latents(pair.generator)
    if pair.generator.num_classes == 0:
        labels = torch.zeros(BATCH, dtype=torch.long)
        torch.testing.assert_close(pair.discriminator(x, labels), pair.discriminator(x))
    else:
        with pytest.raises(GnPluginError, match="class-conditional"):
            pair.discriminator(x)
        with pytest.raises(GnPluginError, match="class-conditional"):
            pair.generator(z)


# -- activations ----------------------------------------------------------------------------------


ACTIVATIONS = [
    ("leaky_relu", True), ("relu", True), ("elu", False), ("softplus", False), ("softplus20", False), ("gelu", False)
]


@pytest.mark.parametrize("name", ["mlp", "cnn32", "resnet32", "biggan32"])
@pytest.mark.parametrize("activation, piecewise_linear", ACTIVATIONS, ids=[a for a, _ in ACTIVATIONS])
def test_activation_option_sets_flag_and_curvature(name, activation, piecewise_linear):
    """Piecewise-linear activations keep D locally linear and Theorem 6 exact; smooth ones do not."""
    torch.manual_seed(0)
    pair = build(name, activation=activation)
    discriminator = pair.discriminator.double()
    assert discriminator.piecewise_linear is piecewise_linear
    x, y = probe(name, pair)
    assert (secant_deviation(discriminator, x, y) < LINEAR_TOLERANCE) is piecewise_linear
    gn_gradient, theorem_6 = gn_gradient_and_theorem_6(discriminator, x, y)
    assert (relative_error(gn_gradient, theorem_6) < FORMULA_TOLERANCE) is piecewise_linear


@pytest.mark.parametrize("name", ["resnet48", "resnet128", "resnet256"])
def test_every_resnet_discriminator_takes_the_activation_option(name):
    torch.manual_seed(0)
    smooth = build(name, activation="softplus20").discriminator
    assert smooth.piecewise_linear is False
    softplus = [m for m in smooth.modules() if isinstance(m, nn.Softplus)]
    assert softplus and all(m.beta == 20 for m in softplus)
    assert not any(isinstance(m, nn.ReLU) for m in smooth.modules())


def test_softplus20_is_softplus_with_beta_20():
    torch.manual_seed(0)
    layers = [m for m in build("mlp", activation="softplus20").discriminator.modules() if isinstance(m, nn.Softplus)]
    x = torch.linspace(-2, 2, 101)
    assert layers and all(torch.allclose(m(x), torch.log1p(torch.exp(20 * x)) / 20, atol=1e-6) for m in layers)


def test_unknown_activation_is_a_clear_error():
    with pytest.raises(GnPluginError, match="unknown discriminator activation 'swish'"):
        build("mlp", activation="swish")


# -- sizes ----------------------------------------------------------------------------------------


def test_cnn32_parameter_counts_match_the_spec_layer_list():
    pair = create("model", "cnn32")

    def conv(cin: int, cout: int, k: int) -> int:
        return cin * cout * k * k + cout  # weight + bias (ConvTranspose2d alike)

    def batch_norm(c: int) -> int:
        return 2 * c

    generator = (
        (128 * 4 * 4 * 512 + 4 * 4 * 512)  # Linear(128 -> 4·4·512)
        + batch_norm(512) + conv(512, 256, 4)
        + batch_norm(256) + conv(256, 128, 4)
        + batch_norm(128) + conv(128, 64, 4)
        + batch_norm(64) + conv(64, 3, 3)
    )  # fmt: skip
    discriminator = (
        conv(3, 64, 3) + conv(64, 128, 4) + conv(128, 128, 3) + conv(128, 256, 4)
        + conv(256, 256, 3) + conv(256, 512, 4) + conv(512, 512, 3)
        + (4 * 4 * 512 + 1)  # Linear(4·4·512 -> 1)
    )  # fmt: skip
    assert (generator, discriminator) == (3_813_379, 5_860_865)
    assert count_parameters(pair.generator) == generator
    assert count_parameters(pair.discriminator) == discriminator


@pytest.mark.parametrize("name", MODELS)
def test_width_multiplier_shrinks_both_networks(name):
    narrow, wider = build(name, width=NARROW), build(name, width=2 * NARROW)
    assert count_parameters(narrow.generator) < count_parameters(wider.generator)
    assert count_parameters(narrow.discriminator) < count_parameters(wider.discriminator)


# -- class conditioning ---------------------------------------------------------------------------

CONDITIONAL = [
    ("biggan32", {}),
    ("mlp", {"num_classes": 10}),
    ("cnn32", {"num_classes": 10}),
    ("resnet32", {"num_classes": 10}),
]


@pytest.mark.parametrize("name, options", CONDITIONAL, ids=[name for name, _ in CONDITIONAL])
def test_conditional_outputs_depend_on_the_label(name, options):
    torch.manual_seed(0)
    pair = build(name, **options)
    generator, discriminator = pair.generator, pair.discriminator
    assert generator.num_classes == 10
    z, _ = latents(generator)
    x = images(generator, dtype=torch.float32)
    zeros, ones = torch.zeros(BATCH, dtype=torch.long), torch.ones(BATCH, dtype=torch.long)
    assert not torch.allclose(generator(z, zeros), generator(z, ones))
    assert not torch.allclose(discriminator(x, zeros), discriminator(x, ones))


def test_biggan_generator_is_spectrally_normalized_and_its_discriminator_is_not():
    pair = build("biggan32")
    layers = (nn.Conv2d, nn.Linear)
    generator_layers = [m for m in pair.generator.modules() if isinstance(m, layers)]
    discriminator_layers = [
        m for m in pair.discriminator.modules() if isinstance(m, (*layers, nn.Embedding))
    ]
    assert generator_layers and all(parametrize.is_parametrized(m, "weight") for m in generator_layers)
    assert discriminator_layers and not any(parametrize.is_parametrized(m) for m in discriminator_layers)


# -- initialisation: the release's conventions ------------------------------------------------------

# model -> the distribution of its conv, linear (and, where named, embedding) weights in the release
INITS = {
    "cnn32": "normal(0, 0.02)", "cnn48": "normal(0, 0.02)",
    "resnet32": "kaiming_normal", "resnet48": "kaiming_normal", "resnet128": "kaiming_normal", "resnet256": "kaiming_normal",
    "biggan32": "xavier_uniform",
}


def weight_layers(module: nn.Module) -> list[tuple[str, nn.Module, Tensor]]:
    """(name, layer, weight) of every conv, transposed conv, linear and embedding; SN's original weight."""
    found = []
    for name, layer in module.named_modules():
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Embedding)):
            weight = layer.parametrizations.weight.original if parametrize.is_parametrized(layer, "weight") else layer.weight
            found.append((name, layer, weight.detach()))
    return found


def expected_cdf(init: str, layer: nn.Module, weight: Tensor):
    """The CDF the release's init draws ``layer``'s weights from."""
    fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(weight)
    if init == "normal(0, 0.02)":
        return stats.norm(0, 0.02).cdf
    if init == "xavier_uniform" or isinstance(layer, nn.Embedding):  # embeddings: xavier in both
        bound = (6 / (fan_in + fan_out)) ** 0.5
        return stats.uniform(-bound, 2 * bound).cdf
    return stats.norm(0, (2 / fan_in) ** 0.5).cdf  # kaiming_normal_: gain √2, fan_in


@pytest.mark.parametrize("name, options", [(n, {}) for n in INITS] + [("resnet32", {"num_classes": 10})],
                         ids=[*INITS, "resnet32-conditional"])
def test_weights_are_drawn_as_the_release_draws_them(name, options):
    """Each layer's weights pass a Kolmogorov–Smirnov test against the release's init; biases are 0."""
    torch.manual_seed(0)
    pair = build(name, width=0.25, **options)
    checked = 0
    for part in (pair.generator, pair.discriminator):
        for layer_name, layer, weight in weight_layers(part):
            if getattr(layer, "bias", None) is not None:
                assert torch.count_nonzero(layer.bias) == 0, layer_name
            if weight.numel() >= 500:
                p_value = stats.kstest(weight.flatten().double().numpy(), expected_cdf(INITS[name], layer, weight)).pvalue
                assert p_value > 1e-4, (name, layer_name, p_value)
                checked += 1
    assert checked >= 6


def test_the_init_test_tells_kaiming_from_xavier():
    """The KS check above has the power to tell the two inits apart on layers of these sizes."""
    torch.manual_seed(0)
    layer = nn.Conv2d(32, 32, 3)
    nn.init.xavier_uniform_(layer.weight)
    cdf = expected_cdf("kaiming_normal", layer, layer.weight)
    assert stats.kstest(layer.weight.detach().flatten().double().numpy(), cdf).pvalue < 1e-10


def test_biggan_generator_spectral_norm_uses_the_release_eps():
    pair = build("biggan32")
    norms = [m.parametrizations.weight[0] for m in pair.generator.modules() if parametrize.is_parametrized(m, "weight")]
    assert norms and all(n.eps == 1e-6 for n in norms)
