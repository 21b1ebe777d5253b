"""Regularizer ``cr``: consistency regularization (Zhang et al., 2020) on real images, for any norm.

Its augmentation is the release's random flip and translation; the flip only where the data set is
mirror-symmetric (option ``hflip``).
"""

from __future__ import annotations

from typing import Callable

from torch import Tensor, nn

from gn_plugin.augment import flip_and_translate
from gn_plugin.regularizers.base import checked_weight, parse_hflip


def consistency_term(
    discriminator: nn.Module,
    images: Tensor,
    labels: Tensor | None = None,
    scores: Tensor | None = None,
    augment: Callable[[Tensor], Tensor] = flip_and_translate,
) -> Tensor:
    """mean((D(aug(x)) − D(x))²) over the batch; neither side is detached.

    ``scores`` are D's scores of ``images`` when the caller already has them (saves a pass).
    """
    if scores is None:
        scores = discriminator(images) if labels is None else discriminator(images, labels)
    augmented = augment(images.detach())
    augmented_scores = discriminator(augmented) if labels is None else discriminator(augmented, labels)
    return consistency_from_scores(scores, augmented_scores)


def consistency_from_scores(scores: Tensor, augmented_scores: Tensor) -> Tensor:
    """mean((D(aug(x)) − D(x))²) from both sides' scores, e.g. from one fused D pass."""
    return ((augmented_scores - scores) ** 2).mean()


class ConsistencyRegularizer:
    """weight · mean((D(aug(x_real)) − D(x_real))²), aug = random flip + translation (black fill, as the release).

    The default weight 10 is CR-GAN's; the ``gn-cr`` norm uses 5, as the GN-GAN authors did.
    ``hflip``: ``auto`` flips only when the data set is mirror-symmetric (the runner tells it through
    ``mirror_symmetric``; digits are not, so their augmentation is the translation alone); ``on`` and
    ``off`` decide regardless of the data set.
    """

    def __init__(self, weight: float = 10.0, max_translation: float = 0.2, hflip: str | bool = "auto") -> None:
        self.weight = checked_weight(weight)
        self.max_translation = max_translation
        self.hflip = parse_hflip(hflip)
        self.mirror_symmetric = True  # the data set's declaration, set by the runner before the first step

    @property
    def flips(self) -> bool:
        """Whether the augmentation mirrors: ``hflip`` on, or auto on a mirror-symmetric data set."""
        return self.hflip == "on" or (self.hflip == "auto" and self.mirror_symmetric)

    def augment(self, images: Tensor) -> Tensor:
        return flip_and_translate(images, self.max_translation, flip=self.flips)

    def __call__(
        self,
        discriminator: nn.Module,
        *,
        real: Tensor,
        fake: Tensor,
        real_labels: Tensor | None = None,
        fake_labels: Tensor | None = None,
        real_scores: Tensor | None = None,
    ) -> Tensor:
        term = consistency_term(discriminator, real, real_labels, real_scores, augment=self.augment)
        return self.weight * term

    def from_scores(self, real_scores: Tensor, augmented_scores: Tensor) -> Tensor:
        """The same value as a call, from scores of ``real`` and of ``self.augment(real)`` computed by the caller."""
        return self.weight * consistency_from_scores(real_scores, augmented_scores)

    def __repr__(self) -> str:
        return (
            f"ConsistencyRegularizer(weight={self.weight}, max_translation={self.max_translation}, "
            f"hflip={self.hflip}, flips={self.flips})"
        )
