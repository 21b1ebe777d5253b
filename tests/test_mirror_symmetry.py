"""Mirror symmetry: a data set declares it, and neither training nor GN-CR's augmentation flips a data set
that is not mirror-symmetric (digits), while a mirror-symmetric one is flipped as the release flips it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from gn_plugin import GnPluginError, create
from gn_plugin.augment import flip_and_translate
from gn_plugin.config import RECIPES, load_config
from gn_plugin.data.base import ImageDataset
from gn_plugin.training.build import setup
from gn_plugin.training.distributed import ProcessGroup
from gn_plugin.training.loop import train
from gn_plugin.training.run_dir import RunFiles
from gn_plugin.training.steps import prepare_real

GN_CR = RECIPES / "digits" / "gn-cr.yaml"
QUICK = ["train.steps=2", "train.batch_size_d=16", "train.batch_size_g=16", "train.device=cpu", "eval.metrics=[]",
         "model.width=0.25"]


def build(tmp_path: Path, *overrides: str):
    config = load_config(GN_CR, [*QUICK, *overrides])
    return setup(config, RunFiles(tmp_path / "run", writer=False), ProcessGroup())


def consistency(t) -> object:
    (regularizer,) = t.regularizers.values()
    return regularizer


def placements(original: torch.Tensor, moved: torch.Tensor, pad: int) -> set[str]:
    """How ``moved`` arises from ``original``: ``plain`` (a shift), ``mirrored`` (a shift of the mirror image)."""
    found = set()
    for kind, source in (("plain", original), ("mirrored", original.flip(-1))):
        padded = F.pad(source, (pad, pad, pad, pad), value=-1.0)
        size = original.shape[-1]
        for dy in range(-pad, pad + 1):
            for dx in range(-pad, pad + 1):
                if torch.equal(padded[:, pad - dy: pad - dy + size, pad - dx: pad - dx + size], moved):
                    found.add(kind)
    return found


def asymmetric_images(n: int, size: int = 10) -> torch.Tensor:
    """Random images in [0, 1] (no pixel black), no two columns alike: a mirror image is never a shift."""
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(1))


def test_built_in_data_sets_declare_whether_they_are_mirror_symmetric(tmp_path):
    assert create("dataset", "digits").mirror_symmetric is False
    assert create("dataset", "fake", size=4).mirror_symmetric is True
    for index in range(3):
        Image.new("RGB", (4, 4), (index, 0, 0)).save(tmp_path / f"{index}.png")
    assert create("dataset", "folder", root=str(tmp_path), resolution=4).mirror_symmetric is True
    assert create("dataset", "folder", root=str(tmp_path), resolution=4, mirror_symmetric=False).mirror_symmetric is False
    from gn_plugin.data.torchvision_sets import TorchvisionImages  # CIFAR-10 and STL-10: photographs

    assert TorchvisionImages.mirror_symmetric is True and ImageDataset.mirror_symmetric is True
    with pytest.raises(GnPluginError, match="mirror_symmetric must be true or false"):
        create("dataset", "folder", root=str(tmp_path), resolution=4, mirror_symmetric="no")


def test_the_augmentation_without_flip_never_mirrors_and_with_it_mirrors_about_half():
    images = asymmetric_images(64)
    kept = flip_and_translate(images, 0.2, torch.Generator().manual_seed(0), flip=False)
    assert all(placements(a, b, 2) == {"plain"} for a, b in zip(images, kept))
    flipped = flip_and_translate(images, 0.2, torch.Generator().manual_seed(0))
    kinds = [placements(a, b, 2) for a, b in zip(images, flipped)]
    assert all(len(kind) == 1 for kind in kinds)  # every output is one of the two, never both
    assert 16 <= sum(kind == {"mirrored"} for kind in kinds) <= 48  # the release's coin flip


def test_gn_cr_on_digits_never_flips_and_training_does_not_flip_either(tmp_path):
    t = build(tmp_path)
    regularizer = consistency(t)
    assert t.hflip is False and regularizer.flips is False
    digits = t.dataset.images[:64]
    torch.manual_seed(0)
    augmented = regularizer.augment(digits)
    kinds = [placements(a, b, 2) for a, b in zip(digits, augmented)]
    assert all("plain" in kind for kind in kinds)
    asymmetric = [kind for digit, kind in zip(digits, kinds) if not torch.equal(digit, digit.flip(-1))]
    assert len(asymmetric) > 50 and all(kind == {"plain"} for kind in asymmetric)
    real, _ = prepare_real(t, digits, t.dataset.labels[:64])
    assert torch.equal(real, digits)


def test_gn_cr_on_a_mirror_symmetric_data_set_flips_as_before(tmp_path):
    t = build(tmp_path, "data.name=fake", "data.options.channels=1", "data.options.size=64")
    assert t.hflip is True and consistency(t).flips is True
    images = asymmetric_images(64, size=8)
    torch.manual_seed(0)
    augmented = consistency(t).augment(images)
    torch.manual_seed(0)
    assert torch.equal(augmented, flip_and_translate(images, 0.2))  # the release's augmentation, draw for draw
    kinds = [placements(a, b, 2) for a, b in zip(images, augmented)]
    assert sum(kind == {"mirrored"} for kind in kinds) >= 16


def test_explicit_switches_override_the_declaration_and_log_says_so(tmp_path, capsys):
    forced = build(tmp_path, "data.hflip=on", "norm.hflip=on")
    assert forced.hflip is True and consistency(forced).flips is True
    config = load_config(GN_CR, [*QUICK, "data.hflip=true"])  # YAML's true still means on
    assert config.data.hflip == "on"
    train(config, tmp_path / "forced", progress=False)
    log = (tmp_path / "forced" / "log.txt").read_text()
    assert "data 'digits' is not mirror-symmetric: real images flipped (data.hflip on)" in log
    assert "gn-cr:ConsistencyRegularizer: augmentation does not mirror (hflip auto)" in log
    assert "warning: data.hflip on mirrors 'digits', which is not mirror-symmetric" in log
    train(load_config(GN_CR, QUICK), tmp_path / "auto", progress=False)
    log = (tmp_path / "auto" / "log.txt").read_text()
    assert "data 'digits' is not mirror-symmetric: real images not flipped (data.hflip auto)" in log
    assert "warning" not in log
    with pytest.raises(GnPluginError, match="hflip must be auto, on or off"):
        build(tmp_path, "norm.hflip=sometimes")


PLUGIN = """
import torch

from gn_plugin.data.base import TensorImageDataset


def text_lines(*, root="data", resolution=None, split="train", download=True, mirrored=False):
    images = torch.rand(32, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    return TensorImageDataset(images, torch.zeros(32, dtype=torch.long), name="text-lines", num_classes=0,
                              mirror_symmetric=mirrored)


def noise_images(*, root="data", resolution=None, split="train", download=True):
    return TensorImageDataset(torch.rand(32, 1, 8, 8) * 2 - 1, torch.zeros(32, dtype=torch.long), name="noise",
                              num_classes=0)


class MirrorPenalty:
    \"\"\"A regularizer of its own whose augmentation mirrors only where the data set allows it.\"\"\"

    def __init__(self, weight=1.0):
        self.weight = weight
        self.mirror_symmetric = True  # the runner sets the data set's declaration

    @property
    def flips(self):
        return self.mirror_symmetric

    def __call__(self, discriminator, *, real, fake, real_labels=None, fake_labels=None, real_scores=None):
        view = real.flip(3) if self.flips else real.roll(1, dims=3)
        return self.weight * ((discriminator(view) - discriminator(real)) ** 2).mean()
"""


def test_plugin_data_sets_and_regularizers_from_entry_points_follow_the_declaration(tmp_path, make_distribution):
    make_distribution("gnp-text", {"gnp_text": PLUGIN}, {
        "gn_plugin.datasets": {"text-lines": "gnp_text:text_lines", "noise-images": "gnp_text:noise_images"},
        "gn_plugin.regularizers": {"mirror-penalty": "gnp_text:MirrorPenalty"},
    })
    plugin_regularizer = "regularizers=[{name: mirror-penalty}]"
    text = build(tmp_path, "data.name=text-lines", plugin_regularizer)
    assert text.hflip is False and text.regularizers["gn-cr:ConsistencyRegularizer"].flips is False
    assert text.regularizers["mirror-penalty"].flips is False  # told by the runner: text is not mirror-symmetric
    mirrored = build(tmp_path, "data.name=text-lines", "data.options.mirrored=true", plugin_regularizer)
    assert mirrored.hflip is True and mirrored.regularizers["mirror-penalty"].flips is True
    assert build(tmp_path, "data.name=noise-images").hflip is True  # declares nothing: mirror-symmetric, as before
    config = load_config(GN_CR, [*QUICK, "data.name=text-lines", plugin_regularizer])
    train(config, tmp_path / "text", progress=False)
    log = (tmp_path / "text" / "log.txt").read_text()
    assert "data 'text-lines' is not mirror-symmetric: real images not flipped (data.hflip auto)" in log
    assert "mirror-penalty: augmentation does not mirror" in log
