"""GN's cheap G step (``GradNorm.cheap_generator_scores``) gives the generator exactly the gradients of the
double-backprop path."""

from __future__ import annotations

import pytest
import torch

from gn_plugin import create, list_components
from gn_plugin.norms.gradnorm import GradNormFormula, score_slope


def generator_gradients(
    cheap: bool, loss_name: str, model: str, num_classes: int, zeta: str = "abs", formula: GradNormFormula | None = None
) -> list[torch.Tensor]:
    torch.manual_seed(0)
    options = {"width": 0.25} if model != "mlp" else {}
    pair = create("model", model, z_dim=16, num_classes=num_classes, **options)
    wrapper = create("norm", "gn", pair.discriminator.double(), zeta=zeta)
    if formula is not None:
        wrapper.formula = formula
    generator = pair.generator.double()
    for p in wrapper.parameters():
        p.data.mul_(3)  # push f and ∇f away from the trivial regime
    z = torch.randn(8, 16, dtype=torch.float64)
    labels = torch.randint(num_classes, (8,)) if num_classes else None
    wrapper.requires_grad_(False)
    score = wrapper.cheap_generator_scores if cheap else wrapper
    scores = score(generator(z, labels), labels)
    create("loss", loss_name).g_loss(scores).backward()
    return [p.grad.clone() for p in generator.parameters()]


@pytest.mark.parametrize("zeta", ["abs", "one", "zero"])
@pytest.mark.parametrize("loss_name", sorted(list_components("loss")))
@pytest.mark.parametrize("model, num_classes", [("mlp", 0), ("mlp", 10), ("cnn32", 0), ("resnet32", 0)])
def test_cheap_generator_step_equals_double_backprop(loss_name, model, num_classes, zeta):
    """For every ζ: the cheap step's per-sample slope is that variant's own ∂f̂/∂f."""
    full = generator_gradients(False, loss_name, model, num_classes, zeta)
    cheap = generator_gradients(True, loss_name, model, num_classes, zeta)
    assert any(g.abs().sum() > 0 for g in full)
    for a, b in zip(full, cheap):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-12)


class ScoresOfOneSlopeOfAbs(GradNormFormula):
    """ζ = 1's scores with ζ = |f|'s slope: what a cheap step that ignored ζ would do."""

    def slope(self, grad_norm, denominator):
        return score_slope(grad_norm, denominator, "abs")


def test_each_zetas_cheap_step_needs_its_own_slope():
    """The test above can fail: ζ = 1 with the slope of ζ = |f| gives the same scores but other gradients."""
    full = generator_gradients(False, "hinge", "mlp", 0, "one")
    wrong = generator_gradients(True, "hinge", "mlp", 0, "one", formula=ScoresOfOneSlopeOfAbs("one"))
    assert any(not torch.allclose(a, b, rtol=1e-3) for a, b in zip(full, wrong))


def test_default_cheap_generator_step_scales_by_theorem_6():
    """ζ = |f| keeps its arithmetic: the scale is exactly ‖∇f‖ / (‖∇f‖ + |f|)²."""
    scores, grad_norm = torch.tensor([0.5, -2.0, 0.0]), torch.tensor([1.5, 0.25, 3.0])
    formula = GradNormFormula("abs")
    _, norm, denominator = formula(scores, torch.diag(grad_norm))
    assert torch.equal(formula.slope(norm, denominator), grad_norm / (grad_norm + scores.abs()) ** 2)


def test_cheap_scores_equal_gn_scores():
    torch.manual_seed(1)
    pair = create("model", "mlp", z_dim=16)
    wrapper = create("norm", "gn", pair.discriminator)
    images = torch.randn(5, 1, 8, 8)
    torch.testing.assert_close(wrapper.cheap_generator_scores(images), wrapper(images))
