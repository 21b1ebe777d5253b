"""Gradient normalization: the bound of Theorem 6, agreement with an independent reference, gradients."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from gn_plugin import GnPluginError, GradNorm, create, normalize_gradient


class MLP(nn.Module):
    def __init__(self, in_features: int, activation: nn.Module, num_classes: int = 0) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Flatten(), nn.Linear(in_features, 32), activation, nn.Linear(32, 32), activation
        )
        self.head = nn.Linear(32, 1)
        self.embed = nn.Embedding(num_classes, 32) if num_classes else None

    def forward(self, x, y=None):
        h = self.body(x)
        out = self.head(h).squeeze(1)
        if self.embed is not None:
            out = out + (self.embed(y) * h).sum(1)  # projection discriminator
        return out


class CNN(nn.Module):
    def __init__(self, activation: nn.Module, num_classes: int = 0) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), activation, nn.AvgPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), activation, nn.AvgPool2d(2),
            nn.Flatten(),
        )
        self.head = nn.Linear(16 * 2 * 2, 1)
        self.embed = nn.Embedding(num_classes, 64) if num_classes else None

    def forward(self, x, y=None):
        h = self.body(x)
        out = self.head(h).squeeze(1)
        if self.embed is not None:
            out = out + (self.embed(y) * h).sum(1)
        return out


PIECEWISE_LINEAR = [
    pytest.param(lambda nc: MLP(3 * 8 * 8, nn.LeakyReLU(0.2), nc), id="mlp-leakyrelu"),
    pytest.param(lambda nc: MLP(3 * 8 * 8, nn.ReLU(), nc), id="mlp-relu"),
    pytest.param(lambda nc: CNN(nn.ReLU(), nc), id="cnn-relu"),
    pytest.param(lambda nc: CNN(nn.LeakyReLU(0.1), nc), id="cnn-leakyrelu"),
]


def inputs(n: int, seed: int, num_classes: int, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 8, 8, generator=generator, dtype=dtype) * 3
    y = torch.randint(num_classes, (n,), generator=generator) if num_classes else None
    return x, y


def reference_gn(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
    """f̂ one sample at a time with torch.func (no batch-sum trick), in the authors' plain form."""
    params = dict(model.named_parameters())

    def score(xi, yi):
        args = (xi[None],) if yi is None else (xi[None], yi[None])
        return functional_call(model, params, args).squeeze()

    if y is None:
        f = vmap(lambda xi: score(xi, None))(x)
        g = vmap(grad(lambda xi: score(xi, None)))(x)
    else:
        f = vmap(score)(x, y)
        g = vmap(grad(score))(x, y)
    return f / (g.flatten(1).norm(dim=1) + f.abs())


@pytest.mark.parametrize("num_classes", [0, 5], ids=["unconditional", "conditional"])
@pytest.mark.parametrize("make", PIECEWISE_LINEAR)
def test_bound_holds_on_piecewise_linear_nets(make, num_classes):
    torch.manual_seed(1)
    model = make(num_classes).double()
    for p in model.parameters():  # large weights make raw scores and gradients far from 1
        p.data.mul_(4)
    x, y = inputs(256, seed=2, num_classes=num_classes)
    x.requires_grad_(True)
    f_hat, f = normalize_gradient(model, x, y, return_raw=True)
    (g_hat,) = torch.autograd.grad(f_hat.sum(), x, retain_graph=True)
    g_hat_norm = g_hat.flatten(1).norm(dim=1)
    assert f.abs().max() > 1, "the raw scores should not already be bounded"
    assert (f_hat.abs() < 1).all()
    assert (g_hat_norm <= 1 + 1e-5).all()
    # Theorem 6, not just the bound: ‖∇f̂‖ = (‖∇f‖ / (‖∇f‖ + |f|))² where the Hessian vanishes.
    (g,) = torch.autograd.grad(f.sum(), x)
    g_norm = g.flatten(1).norm(dim=1)
    torch.testing.assert_close(g_hat_norm, (g_norm / (g_norm + f.abs())) ** 2)


@pytest.mark.parametrize("num_classes", [0, 5], ids=["unconditional", "conditional"])
@pytest.mark.parametrize("make", PIECEWISE_LINEAR)
def test_matches_per_sample_reference(make, num_classes):
    torch.manual_seed(3)
    model = make(num_classes).double()
    x, y = inputs(16, seed=4, num_classes=num_classes)
    torch.testing.assert_close(normalize_gradient(model, x, y), reference_gn(model, x, y), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("make", PIECEWISE_LINEAR)
def test_batch_equals_each_sample_alone(make):
    torch.manual_seed(5)
    model = make(0).double()
    x, _ = inputs(12, seed=6, num_classes=0)
    together = normalize_gradient(model, x)
    alone = torch.cat([normalize_gradient(model, x[i : i + 1]) for i in range(len(x))])
    torch.testing.assert_close(together, alone, rtol=1e-12, atol=1e-14)


def test_parameter_gradients_match_reference_and_gradcheck():
    torch.manual_seed(7)
    model = MLP(3 * 8 * 8, nn.LeakyReLU(0.2), num_classes=4).double()
    x, y = inputs(8, seed=8, num_classes=4)
    weights = torch.linspace(-1, 1, 8, dtype=torch.float64)  # an arbitrary loss of f̂

    ours = torch.autograd.grad((weights * normalize_gradient(model, x, y)).sum(), list(model.parameters()))
    theirs = torch.autograd.grad((weights * reference_gn(model, x, y)).sum(), list(model.parameters()))
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)

    # Finite differences through the double-backprop graph, w.r.t. the first layer's weight.
    names = [n for n, _ in model.named_parameters()]
    first = model.body[1].weight.detach().clone().requires_grad_(True)

    def f_hat_of_weight(w):
        params = {n: (w if n == "body.1.weight" else p) for n, p in model.named_parameters()}
        wrapped = lambda xb, yb: functional_call(model, params, (xb, yb))  # noqa: E731
        return normalize_gradient(wrapped, x, y)

    assert "body.1.weight" in names
    assert torch.autograd.gradcheck(f_hat_of_weight, (first,), eps=1e-6, atol=1e-5)


def test_smooth_activation_breaks_the_bound():
    # f(x) = tanh(10 x): at tanh = 0.5, |d f̂/dx| = k²(1 + t²)(1 − t²) / (k(1 − t²) + t)² ≈ 1.46 > 1.
    model = nn.Sequential(nn.Linear(1, 1), nn.Tanh()).double()
    with torch.no_grad():
        model[0].weight.fill_(10.0)
        model[0].bias.zero_()
    x = torch.linspace(-1, 1, 401, dtype=torch.float64)[:, None].requires_grad_(True)
    f_hat = normalize_gradient(model, x)
    (g_hat,) = torch.autograd.grad(f_hat.sum(), x)
    assert g_hat.abs().max() > 1.4
    assert (f_hat.abs() < 1).all()  # |f̂| < 1 still holds; only the gradient bound needs piecewise linearity


def test_guard_is_exact_away_from_zero_and_finite_at_zero():
    torch.manual_seed(9)
    model = MLP(3 * 8 * 8, nn.ReLU())
    x, _ = inputs(64, seed=10, num_classes=0, dtype=torch.float32)
    x.requires_grad_(True)
    f = model(x)
    (g,) = torch.autograd.grad(f.sum(), x, create_graph=True)
    plain = f / (g.flatten(1).norm(dim=1) + f.abs())
    assert torch.equal(normalize_gradient(model, x), plain)  # bit for bit

    class Dead(nn.Module):  # f = 0 and ∇f = 0 everywhere: the only place the guard acts
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.zeros(()))

        def forward(self, x):
            return self.scale * x.flatten(1).sum(1)

    dead = Dead()
    out = normalize_gradient(dead, x)
    assert torch.equal(out, torch.zeros(64))
    out.sum().backward()
    assert torch.isfinite(dead.scale.grad)


def test_input_that_needs_no_grad_is_left_untouched_and_fake_graph_reaches_generator():
    model = MLP(3 * 8 * 8, nn.ReLU())
    real = torch.randn(4, 3, 8, 8)
    normalize_gradient(model, real)
    assert not real.requires_grad

    generator = nn.Linear(5, 3 * 8 * 8)
    fake = generator(torch.randn(4, 5)).view(4, 3, 8, 8)
    normalize_gradient(model, fake).sum().backward()
    assert generator.weight.grad is not None and generator.weight.grad.abs().sum() > 0


def test_wrapper_and_registry_agree_and_reject_batchnorm():
    model = CNN(nn.ReLU(), num_classes=3)
    x, y = inputs(6, seed=11, num_classes=3, dtype=torch.float32)
    wrapper = create("norm", "gn", model)
    assert isinstance(wrapper, GradNorm)
    torch.testing.assert_close(wrapper(x, y), normalize_gradient(model, x, y))
    with pytest.raises(GnPluginError, match="BatchNorm at: 1"):
        GradNorm(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(1)))


# -- ζ(x): the paper's formulation ablation ----------------------------------------------------------
def reference_zeta(model: nn.Module, x: torch.Tensor, zeta: str) -> torch.Tensor:
    """f / (‖∇f‖ + ζ) one sample at a time with torch.func, ζ = |f|, 1 or 0."""
    params = dict(model.named_parameters())

    def score(xi):
        return functional_call(model, params, (xi[None],)).squeeze()

    f, g = vmap(score)(x), vmap(grad(score))(x)
    norm = g.flatten(1).norm(dim=1)
    return f / (norm + {"abs": f.abs(), "one": torch.ones_like(f), "zero": torch.zeros_like(f)}[zeta])


@pytest.mark.parametrize("zeta", ["abs", "one", "zero"])
@pytest.mark.parametrize("make", PIECEWISE_LINEAR)
def test_each_zeta_matches_its_formula_and_its_gradient_norm(make, zeta):
    """ζ = |f|: ‖∇f̂‖ = (‖∇f‖/(‖∇f‖+|f|))², |f̂| < 1; ζ = 1: ‖∇f̂‖ = ‖∇f‖/(‖∇f‖+1) < 1; ζ = 0: ‖∇f̂‖ = 1.
    Only ζ = |f| bounds |f̂| (piecewise-linear nets, where the Hessian vanishes)."""
    torch.manual_seed(1)
    model = make(0).double()
    for p in model.parameters():
        p.data.mul_(4)
    x, _ = inputs(128, seed=2, num_classes=0)
    x.requires_grad_(True)
    f_hat, f = normalize_gradient(model, x, return_raw=True, zeta=zeta)
    torch.testing.assert_close(f_hat, reference_zeta(model, x.detach(), zeta), rtol=1e-10, atol=1e-12)
    (g_hat,) = torch.autograd.grad(f_hat.sum(), x, retain_graph=True)
    (g,) = torch.autograd.grad(f.sum(), x)
    n, n_hat = g.flatten(1).norm(dim=1), g_hat.flatten(1).norm(dim=1)
    expected = {"abs": (n / (n + f.abs())) ** 2, "one": n / (n + 1), "zero": torch.ones_like(n)}[zeta]
    torch.testing.assert_close(n_hat, expected)
    if zeta == "abs":
        assert (f_hat.abs() < 1).all()
    else:
        assert f_hat.abs().max() > 1, "without ζ = |f| the scores are not bounded"


def test_zeta_zero_guard_acts_only_where_the_gradient_vanishes():
    """f / ‖∇f‖ bit for bit where ∇f ≠ 0; on a locally constant D (f ≠ 0, ∇f = 0) f̂ = f, finite, with gradients."""
    torch.manual_seed(9)
    model = MLP(3 * 8 * 8, nn.LeakyReLU(0.2))
    x, _ = inputs(64, seed=10, num_classes=0, dtype=torch.float32)
    x.requires_grad_(True)
    f = model(x)
    (g,) = torch.autograd.grad(f.sum(), x, create_graph=True)
    assert torch.equal(normalize_gradient(model, x, zeta="zero"), f / g.flatten(1).norm(dim=1))

    class Constant(nn.Module):  # f = b and ∇f = 0: the only place the guard acts
        piecewise_linear = True

        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.zeros(()))
            self.bias = nn.Parameter(torch.tensor(0.7))

        def forward(self, x):
            return self.weight * x.flatten(1).sum(1) + self.bias

    constant = Constant()
    out = normalize_gradient(constant, x, zeta="zero")
    assert torch.equal(out, torch.full((64,), 0.7))
    out.sum().backward()
    assert torch.isfinite(constant.bias.grad) and constant.bias.grad == 64


@pytest.mark.parametrize("norm", ["gn", "gn-cr"])
def test_zeta_is_an_option_of_gn_and_gn_cr_and_a_bad_one_is_a_clear_error(norm):
    model = CNN(nn.ReLU())
    x, _ = inputs(6, seed=11, num_classes=0, dtype=torch.float32)
    wrapper = create("norm", norm, model, zeta="one")
    assert wrapper.formula.zeta == "one"
    torch.testing.assert_close(wrapper(x), normalize_gradient(model, x, zeta="one"))
    assert create("norm", norm, model).formula.zeta == "abs"  # the paper's GN by default
    with pytest.raises(GnPluginError, match=rf"^norm '{norm}': zeta must be one of abs, one, zero, got 'two'$"):
        create("norm", norm, model, zeta="two")


def test_smooth_discriminator_warns_once_that_the_bound_no_longer_holds():
    smooth = create("model", "mlp", activation="softplus20").discriminator
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        for _ in range(3):
            create("norm", "gn", smooth)
        create("norm", "gn", create("model", "mlp").discriminator)  # piecewise linear: silent
        create("norm", "gn", MLP(3 * 8 * 8, nn.ReLU()))  # declares nothing: silent
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "not piecewise linear" in messages[0] and "no longer holds" in messages[0]
    assert "\n" not in messages[0]


def test_under_no_grad_gn_scores_as_with_grad_and_gives_detached_scores():
    # scoring images for evaluation under torch.no_grad() is legitimate: GN still takes the input gradient
    torch.manual_seed(0)
    model = MLP(3 * 8 * 8, nn.LeakyReLU(0.2)).double()
    x, _ = inputs(6, seed=1, num_classes=0)
    expected = reference_gn(model, x, None)
    with torch.no_grad():
        scores, raw = normalize_gradient(model, x, return_raw=True)
        wrapped = GradNorm(model)(x)
    torch.testing.assert_close(scores, expected)
    torch.testing.assert_close(wrapped, expected)
    assert not scores.requires_grad and scores.grad_fn is None and not raw.requires_grad
    assert all(p.grad is None for p in model.parameters())  # nothing accumulated into D
    with torch.inference_mode(), pytest.raises(GnPluginError, match="inference_mode"):
        GradNorm(model)(x)
