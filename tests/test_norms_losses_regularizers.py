"""SN, the losses, the regularizers and the consistency augmentation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from scipy import stats
from torch import nn
from torchvision.transforms import RandomAffine

from gn_plugin import create
from gn_plugin.augment import flip_and_translate, random_shifts
from gn_plugin.norms.base import uses_batch_statistics
from gn_plugin.regularizers.consistency import consistency_term


def small_discriminator(num_classes: int = 0) -> nn.Module:
    class D(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
            self.conv2 = nn.Conv2d(16, 32, 4, stride=2, padding=1)
            self.linear = nn.Linear(32 * 4 * 4, 1)
            self.embed = nn.Embedding(num_classes, 32 * 4 * 4) if num_classes else None

        def forward(self, x, y=None):
            h = F.leaky_relu(self.conv2(F.leaky_relu(self.conv1(x), 0.1)), 0.1).flatten(1)
            out = self.linear(h).squeeze(1)
            return out if y is None else out + (self.embed(y) * h).sum(1)

    torch.manual_seed(0)
    d = D()
    for p in d.parameters():
        p.data.mul_(5)  # singular values far from 1 before SN
    return d


def test_spectral_norm_makes_every_layer_unit_spectral_norm():
    d = small_discriminator(num_classes=3)
    wrapper = create("norm", "sn", d)
    x, y = torch.randn(8, 3, 8, 8), torch.randint(3, (8,))
    for _ in range(60):  # one power iteration per training forward
        out = wrapper(x, y)
    assert out.shape == (8,)
    assert uses_batch_statistics(wrapper) == []
    layers = [d.conv1, d.conv2, d.linear, d.embed]
    for layer in layers:
        assert nn.utils.parametrize.is_parametrized(layer, "weight")
        w = layer.weight.detach()
        sigma = torch.linalg.matrix_norm(w.reshape(w.shape[0], -1), ord=2)
        assert sigma == pytest.approx(1.0, abs=2e-2), layer


def test_none_returns_raw_scores():
    d = small_discriminator()
    x = torch.randn(5, 3, 8, 8)
    torch.testing.assert_close(create("norm", "none", d)(x), d(x))


LOSS_CASES = {
    "hinge": (lambda r, f: F.relu(1 - r).mean() + F.relu(1 + f).mean(), lambda f: -f.mean()),
    "ns": (
        lambda r, f: F.binary_cross_entropy_with_logits(r, torch.ones_like(r))
        + F.binary_cross_entropy_with_logits(f, torch.zeros_like(f)),
        lambda f: F.binary_cross_entropy_with_logits(f, torch.ones_like(f)),
    ),
    "wasserstein": (lambda r, f: f.mean() - r.mean(), lambda f: -f.mean()),
    "ls": (lambda r, f: 0.5 * ((r - 1) ** 2).mean() + 0.5 * (f**2).mean(), lambda f: 0.5 * ((f - 1) ** 2).mean()),
}


@pytest.mark.parametrize("name", sorted(LOSS_CASES))
def test_losses_match_their_definitions(name):
    real, fake = torch.randn(32) * 3, torch.randn(32) * 3
    loss = create("loss", name)
    d_ref, g_ref = LOSS_CASES[name]
    torch.testing.assert_close(loss.d_loss(real, fake), d_ref(real, fake))
    torch.testing.assert_close(loss.g_loss(fake), g_ref(fake))


def test_hinge_is_wasserstein_plus_two_on_gn_scores():
    real, fake = torch.rand(64) * 2 - 1, torch.rand(64) * 2 - 1  # |f̂| < 1
    hinge, wgan = create("loss", "hinge"), create("loss", "wasserstein")
    torch.testing.assert_close(hinge.d_loss(real, fake), wgan.d_loss(real, fake) + 2)


def test_gradient_penalty_equals_hand_computation():
    # A linear critic has ∇ₓD = w everywhere, so the penalty is 10 (‖w‖ − 1)² whatever the interpolates.
    linear = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 1))
    critic = create("norm", "none", linear)
    w_norm = linear[1].weight.norm()
    gp = create("regularizer", "gp")
    real, fake = torch.randn(16, 3, 8, 8), torch.randn(16, 3, 8, 8)
    torch.testing.assert_close(gp(critic, real=real, fake=fake), 10 * (w_norm - 1) ** 2)

    # A nonlinear critic: recompute the interpolates from the same random state by hand.
    critic = create("norm", "none", small_discriminator())
    torch.manual_seed(3)
    penalty = create("regularizer", "gp", weight=2.5)(critic, real=real, fake=fake)
    torch.manual_seed(3)
    alpha = torch.rand(16, 1, 1, 1)
    x_hat = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    (g,) = torch.autograd.grad(critic(x_hat).sum(), x_hat)
    torch.testing.assert_close(penalty, 2.5 * ((g.flatten(1).norm(dim=1) - 1) ** 2).mean())


def test_r1_equals_hand_computation_and_trains_d():
    d = small_discriminator()
    critic = create("norm", "none", d)
    real = torch.randn(8, 3, 8, 8)
    penalty = create("regularizer", "r1", weight=4.0)(critic, real=real, fake=real)
    x = real.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(critic(x).sum(), x)
    torch.testing.assert_close(penalty, 2.0 * (g.flatten(1).norm(dim=1) ** 2).mean())
    penalty.backward()
    assert d.conv1.weight.grad.abs().sum() > 0  # the penalty is differentiable w.r.t. D's weights


def centred_images(n: int) -> torch.Tensor:
    """Images whose content sits inside a 20 % black margin, so flips and ≤ 20 % shifts keep every pixel."""
    images = torch.full((n, 3, 20, 20), -1.0)
    images[:, :, 4:16, 4:16] = torch.rand(n, 3, 12, 12) + 0.1
    return images


def test_consistency_zero_for_invariant_d_and_positive_otherwise():
    images = centred_images(16)
    pixel_sum = create("norm", "none", nn.Sequential(nn.Flatten(), nn.Linear(3 * 400, 1, bias=False)))
    with torch.no_grad():
        pixel_sum.discriminator[1].weight.fill_(1.0)  # D(x) = Σ pixels: flip- and shift-invariant here
    cr = create("regularizer", "cr")
    assert cr(pixel_sum, real=images, fake=images).item() == pytest.approx(0.0, abs=1e-4)

    generic = create("norm", "none", nn.Sequential(nn.Flatten(), nn.Linear(3 * 400, 1)))
    value = cr(generic, real=images, fake=images)
    assert value.item() > 1e-4
    value.backward()  # neither side is detached: both carry gradient to D
    assert generic.discriminator[1].weight.grad.abs().sum() > 0


def test_consistency_term_differentiates_both_sides():
    d = create("norm", "gn", small_discriminator())
    images = torch.randn(4, 3, 8, 8)
    calls = []
    term = consistency_term(d, images, augment=lambda x: (calls.append(1), x.flip(3))[1])
    assert calls == [1]
    grads = torch.autograd.grad(term, list(d.parameters()))
    assert any(g.abs().sum() > 0 for g in grads)


def test_gn_cr_adds_a_weighted_consistency_regularizer():
    wrapper = create("norm", "gn-cr", small_discriminator(), consistency_weight=7.0)
    (regularizer,) = wrapper.implied_regularizers
    assert regularizer.weight == 7.0
    images = torch.randn(6, 3, 8, 8)
    torch.manual_seed(0)
    value = regularizer(wrapper, real=images, fake=images)
    torch.manual_seed(0)
    by_hand = 7.0 * ((wrapper(flip_and_translate(images)) - wrapper(images)) ** 2).mean()
    torch.testing.assert_close(value, by_hand)


def test_augmentation_is_a_flip_and_bounded_shift_with_black_fill():
    images = torch.rand(32, 2, 10, 10) * 0.5  # content in [0, 0.5]: no pixel is black (-1)
    out = flip_and_translate(images, max_translation=0.2, generator=torch.Generator().manual_seed(0))
    seen_shifts = set()
    for original, moved in zip(images, out):
        matches = []
        for flipped in (original, original.flip(2)):
            padded = F.pad(flipped, (2, 2, 2, 2), value=-1.0)
            for dy in range(-2, 3):
                for dx in range(-2, 3):
                    candidate = padded[:, 2 - dy : 12 - dy, 2 - dx : 12 - dx]
                    if torch.equal(candidate, moved):
                        matches.append((dy, dx))
        assert matches, "every output is a flipped and/or shifted copy with the border filled black (-1)"
        seen_shifts.update(matches)
    assert len(seen_shifts) > 5  # shifts actually vary across the batch
    uncovered = out[out < 0]
    assert uncovered.numel() > 0 and torch.all(uncovered == -1.0)


def rounded_uniform_probabilities(limit: float) -> dict[int, float]:
    """P(round(U(−limit, limit)) = k): the share of [k − ½, k + ½] inside [−limit, limit]."""
    top = math.floor(limit + 0.5)
    return {k: (min(k + 0.5, limit) - max(k - 0.5, -limit)) / (2 * limit) for k in range(-top, top + 1)}


@pytest.mark.parametrize("size", [32, 48])
def test_shifts_follow_torchvisions_random_affine(size):
    """round(U(−0.2·S, 0.2·S)) per axis, as RandomAffine(0, translate=(0.2, 0.2)) draws it.

    At 48 px the largest shifts (±10) have probability 0.1/19.2 each, not 1/21 as a uniform integer.
    """
    expected = rounded_uniform_probabilities(0.2 * size)
    draws = 200_000
    shifts = random_shifts(draws, size, 0.2, "cpu", torch.Generator().manual_seed(0))
    observed = torch.bincount(shifts - min(expected), minlength=len(expected)).numpy()
    assert shifts.min() == min(expected) and shifts.max() == max(expected)
    assert stats.chisquare(observed, [p * draws for p in expected.values()]).pvalue > 1e-4
    uniform_integers = [draws / len(expected)] * len(expected)  # the test can tell the old draw apart
    assert stats.chisquare(observed, uniform_integers).pvalue < 1e-10
    torch.manual_seed(0)  # torchvision's own draws follow the same probabilities
    theirs = [RandomAffine.get_params((0.0, 0.0), (0.2, 0.2), None, None, [size, size])[1][0] for _ in range(20_000)]
    counts = torch.bincount(torch.tensor(theirs) - min(expected), minlength=len(expected)).numpy()
    assert stats.chisquare(counts, [p * len(theirs) for p in expected.values()]).pvalue > 1e-4


def test_augmentation_is_reproducible_and_stays_on_device():
    images = torch.rand(8, 3, 16, 16)
    a = flip_and_translate(images, generator=torch.Generator().manual_seed(42))
    b = flip_and_translate(images, generator=torch.Generator().manual_seed(42))
    c = flip_and_translate(images, generator=torch.Generator().manual_seed(43))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.device == images.device and a.shape == images.shape
    if torch.cuda.is_available():
        on_gpu = flip_and_translate(images.cuda(), generator=torch.Generator("cuda").manual_seed(0))
        assert on_gpu.is_cuda
