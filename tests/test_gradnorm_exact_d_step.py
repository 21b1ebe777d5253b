"""GN's cheap D step (``GradNorm.cheap_discriminator_scores``) gives the discriminator exactly the gradients
of the double-backprop path, and the runner takes it only where it is exact."""

from __future__ import annotations

import pytest
import torch

from gn_plugin import create, list_components
from gn_plugin.config import config_from_dict
from gn_plugin.errors import GnPluginError
from gn_plugin.norms.gradnorm_exact import supports_cheap_discriminator_step
from gn_plugin.training.build import use_cheap_step


def d_step(
    cheap: bool, loss_name: str, model: str, zeta: str = "abs"
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """A D step's scores, x-gradient and parameter gradients: adversarial loss plus a CR-like term."""
    torch.manual_seed(0)
    options = {"width": 0.25} if model != "mlp" else {}
    pair = create("model", model, z_dim=16, **options)
    wrapper = create("norm", "gn", pair.discriminator.double(), zeta=zeta)
    for p in wrapper.parameters():
        p.data.mul_(3)  # push f and ∇f away from the trivial regime
    shape = (pair.generator.channels, pair.generator.resolution, pair.generator.resolution)
    real, fake = (torch.rand(2, 6, *shape, dtype=torch.float64) * 2 - 1).unbind()
    images = torch.cat([real, fake, real.flip(3)]).requires_grad_(True)
    score = wrapper.cheap_discriminator_scores if cheap else wrapper
    scores = score(images, None)
    real_scores, fake_scores, view_scores = scores.split(6)
    loss = create("loss", loss_name).d_loss(real_scores, fake_scores) + 5 * ((view_scores - real_scores) ** 2).mean()
    loss.backward()
    return scores.detach(), images.grad, [p.grad for p in wrapper.parameters()]


@pytest.mark.parametrize("zeta", ["abs", "one", "zero"])
@pytest.mark.parametrize("loss_name", sorted(list_components("loss")))
@pytest.mark.parametrize("model", ["mlp", "cnn32", "resnet32"])
def test_cheap_discriminator_step_equals_double_backprop(loss_name, model, zeta):
    full_scores, full_x, full = d_step(False, loss_name, model, zeta)
    cheap_scores, cheap_x, cheap = d_step(True, loss_name, model, zeta)
    assert torch.equal(cheap_scores, full_scores)  # the same f̂, bit for bit
    assert len(cheap) == len(full) and all(g.abs().sum() > 0 for g in full)
    for a, b in zip(full, cheap):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(cheap_x, full_x, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(
    "model, options, supported",
    [("cnn32", {}, True), ("resnet32", {}, True), ("mlp", {}, True), ("cnn32", {"activation": "elu"}, False),
     ("mlp", {"num_classes": 10}, False), ("biggan32", {}, False)],
)
def test_cheap_discriminator_step_only_where_it_is_exact(model, options, supported):
    # smooth activations break the Hessian argument; projection embeddings are not Conv2d/Linear
    assert supports_cheap_discriminator_step(create("model", model, width=0.25, **options).discriminator) is supported


def test_cheap_discriminator_step_switch():
    def config(**train):
        return config_from_dict({"norm": "gn", "model": {"name": "cnn32"}, "train": train})

    wrapper = create("norm", "gn", create("model", "cnn32", width=0.25).discriminator)
    assert use_cheap_step(config(), wrapper, "discriminator")
    assert not use_cheap_step(config(cheap_discriminator_step="off"), wrapper, "discriminator")
    assert not use_cheap_step(config(precision="bf16"), wrapper, "discriminator")
    with pytest.raises(GnPluginError, match="bf16"):
        use_cheap_step(config(precision="bf16", cheap_discriminator_step="on"), wrapper, "discriminator")
    sn = create("norm", "sn", create("model", "cnn32", width=0.25).discriminator)
    with pytest.raises(GnPluginError, match="no cheap D step"):
        use_cheap_step(config(cheap_discriminator_step="on"), sn, "discriminator")


@pytest.mark.parametrize("model", ["mlp", "cnn32", "resnet32", "biggan32"])
@pytest.mark.parametrize("activation", ["elu", "softplus", "softplus20"])
def test_smooth_activation_turns_both_cheap_steps_off_and_refuses_on(model, activation):
    def config(**train):
        return config_from_dict({"norm": "gn", "model": {"name": model, "options": {"activation": activation}}, "train": train})

    with pytest.warns(UserWarning, match="not piecewise linear"):
        wrapper = create("norm", "gn", create("model", model, width=0.25, activation=activation).discriminator)
    for step in ("generator", "discriminator"):
        assert not use_cheap_step(config(), wrapper, step)
        with pytest.raises(GnPluginError, match="not piecewise linear"):
            use_cheap_step(config(**{f"cheap_{step}_step": "on"}), wrapper, step)
