"""The digits classifier: a small CNN on 8×8 grey digits that scores samples of the ``digits`` data set.

Its penultimate layer gives the features for FID/KID, its softmax the class probabilities for the
classifier Inception Score and class coverage. ``python -m gn_plugin.evaluation.digits_classifier``
trains it on the digits train split (fixed seed, CPU, seconds), reports its held-out accuracy and
writes the shipped weights ``gn_plugin/assets/digits_classifier.pt`` (a state_dict).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor, nn

from gn_plugin.atomic import write_atomically
from gn_plugin.data.base import resize, to_unit_range
from gn_plugin.data.digits import digits_arrays
from gn_plugin.errors import GnPluginError

DIGITS_CLASSIFIER_PATH = Path(__file__).resolve().parents[1] / "assets" / "digits_classifier.pt"
FEATURE_DIM = 64
NUM_CLASSES = 10


def to_digit_grid(images: Tensor) -> Tensor:
    """Images in [-1, 1], any channels and resolution -> the classifier's input: grey 8×8 in [-1, 1]."""
    if images.shape[1] != 1:
        images = images.mean(dim=1, keepdim=True)
    return resize(images, 8)


class DigitsClassifier(nn.Module):
    """Two conv and two linear layers; ``features``: the penultimate layer, standardized, before its ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(32 * 4 * 4, FEATURE_DIM),
            # Unit-scale features, as Inception's are: KID's kernel (x·y/d + 1)³ explodes otherwise.
            nn.BatchNorm1d(FEATURE_DIM, affine=False),
        )
        # Features are taken before this ReLU: dead units would make their covariance singular.
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(FEATURE_DIM, NUM_CLASSES))

    def features(self, images: Tensor) -> Tensor:
        """Penultimate-layer features [N, FEATURE_DIM] of images in [-1, 1]."""
        return self.body(to_digit_grid(images))

    def forward(self, images: Tensor) -> Tensor:
        """Class logits [N, 10] of images in [-1, 1]."""
        return self.head(self.features(images))


def digits_tensors(split: str) -> tuple[Tensor, Tensor]:
    """``(images [N, 1, 8, 8] in [-1, 1], labels [N])`` of a digits split."""
    images, labels = digits_arrays(split)
    return to_unit_range(torch.from_numpy(images)[:, None]), torch.from_numpy(labels)


def train_digits_classifier(*, epochs: int = 40, batch_size: int = 64, seed: int = 0) -> DigitsClassifier:
    """Train a :class:`DigitsClassifier` on the digits train split, deterministically on the CPU."""
    torch.manual_seed(seed)
    images, labels = digits_tensors("train")
    model = DigitsClassifier()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    for _ in range(epochs):
        for batch in torch.randperm(len(images)).split(batch_size):
            loss = nn.functional.cross_entropy(model(images[batch]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


@torch.no_grad()
def accuracy(model: DigitsClassifier, images: Tensor, labels: Tensor) -> float:
    """Fraction of ``images`` whose predicted class is their label."""
    return (model(images).argmax(dim=1) == labels).float().mean().item()


def load_digits_classifier(
    path: str | os.PathLike = DIGITS_CLASSIFIER_PATH, device: str | torch.device = "cpu"
) -> DigitsClassifier:
    """The classifier with its shipped weights, in eval mode on ``device``."""
    if not os.path.isfile(path):
        raise GnPluginError(
            f"digits classifier weights not found at {path}; "
            "create them with: python -m gn_plugin.evaluation.digits_classifier"
        )
    model = DigitsClassifier()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.to(device).eval()


def main() -> None:
    """Train, report held-out accuracy, write the asset."""
    # One thread: as fast for this tiny net, not slowed down by busy cores, and the weights do not
    # depend on how many cores the machine has.
    torch.set_num_threads(1)
    model = train_digits_classifier()
    held_out = accuracy(model, *digits_tensors("test"))
    write_atomically(DIGITS_CLASSIFIER_PATH, lambda file: torch.save(model.state_dict(), file))
    size_kb = os.path.getsize(DIGITS_CLASSIFIER_PATH) / 1024
    print(f"held-out accuracy {held_out:.4f}; wrote {DIGITS_CLASSIFIER_PATH} ({size_kb:.0f} KiB)")


if __name__ == "__main__":
    main()
