"""GN's cheap G step (``GradNorm.cheap_generator_scores``) gives the generator exactly the gradients of the
double-backprop path."""

from __future__ import annotations

import pytest
import torch

from gn_plugin import create, list_components


def generator_gradients(cheap: bool, loss_name: str, model: str, num_classes: int) -> list[torch.Tensor]:
    torch.manual_seed(0)
    options = {"width": 0.25} if model != "mlp" else {}
    pair = create("model", model, z_dim=16, num_classes=num_classes, **options)
    wrapper = create("norm", "gn", pair.discriminator.double())
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


@pytest.mark.parametrize("loss_name", sorted(list_components("loss")))
@pytest.mark.parametrize("model, num_classes", [("mlp", 0), ("mlp", 10), ("cnn32", 0)])
def test_cheap_generator_step_equals_double_backprop(loss_name, model, num_classes):
    full = generator_gradients(False, loss_name, model, num_classes)
    cheap = generator_gradients(True, loss_name, model, num_classes)
    assert any(g.abs().sum() > 0 for g in full)
    for a, b in zip(full, cheap):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-12)


def test_cheap_scores_equal_gn_scores():
    torch.manual_seed(1)
    pair = create("model", "mlp", z_dim=16)
    wrapper = create("norm", "gn", pair.discriminator)
    images = torch.randn(5, 1, 8, 8)
    torch.testing.assert_close(wrapper.cheap_generator_scores(images), wrapper(images))
