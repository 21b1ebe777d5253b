"""pytorch-fid's port of the TF Inception (2015-12-05) weights: clean-fid's ``legacy_pytorch`` network.

The architecture is clean-fid's ``fid_inception_v3`` (torchvision's Inception v3 with the FID
blocks); the weights are read from a local file, downloaded there only when missing.
"""

from __future__ import annotations

import os
import tempfile

import torch
import torchvision
from cleanfid import inception_pytorch as pytorch_fid
from torch import Tensor, nn

from gn_plugin.errors import GnPluginError

#: the weights file, as torch hub names it where clean-fid loads it from
PYTORCH_INCEPTION_FILE = os.path.basename(pytorch_fid.FID_WEIGHTS_URL)


def resolve_pytorch_inception_path(path: str | None = None) -> str:
    """``path`` with ``~`` expanded, or where torch hub keeps pytorch-fid's weights (as clean-fid loads them)."""
    if path:
        return os.path.expanduser(path)
    return os.path.join(torch.hub.get_dir(), "checkpoints", PYTORCH_INCEPTION_FILE)


def pytorch_inception_network() -> nn.Module:
    """pytorch-fid's Inception architecture (clean-fid's ``fid_inception_v3``), without weights."""
    inception = torchvision.models.inception_v3(weights=None, num_classes=1008, aux_logits=False, init_weights=False)
    inception.Mixed_5b = pytorch_fid.FIDInceptionA(192, pool_features=32)
    inception.Mixed_5c = pytorch_fid.FIDInceptionA(256, pool_features=64)
    inception.Mixed_5d = pytorch_fid.FIDInceptionA(288, pool_features=64)
    inception.Mixed_6b = pytorch_fid.FIDInceptionC(768, channels_7x7=128)
    inception.Mixed_6c = pytorch_fid.FIDInceptionC(768, channels_7x7=160)
    inception.Mixed_6d = pytorch_fid.FIDInceptionC(768, channels_7x7=160)
    inception.Mixed_6e = pytorch_fid.FIDInceptionC(768, channels_7x7=192)
    inception.Mixed_7b = pytorch_fid.FIDInceptionE_1(1280)
    inception.Mixed_7c = pytorch_fid.FIDInceptionE_2(2048)
    return inception


def load_pytorch_inception(path: str, device: str | torch.device = "cpu") -> tuple[nn.Module, Tensor]:
    """pytorch-fid's Inception from the file ``path`` (downloaded there if missing): ``(network, fc weight)``.

    ``network`` maps images in [-1, 1] at 299 × 299 to the 2048-d pool features; the fc weight
    [1008, 2048] gives the class logits without the bias, as the TF Inception Score does.
    """
    if not os.path.isfile(path):
        folder = os.path.dirname(path) or "."
        try:
            os.makedirs(folder, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=folder) as scratch:
                torch.hub.download_url_to_file(pytorch_fid.FID_WEIGHTS_URL, os.path.join(scratch, "weights"), progress=False)
                os.replace(os.path.join(scratch, "weights"), path)
        except Exception as exc:  # urllib, ssl, http.client and OS errors alike mean "no file"
            reason = " ".join(f"{type(exc).__name__}: {exc}".split())
            raise GnPluginError(
                f"pytorch-fid's Inception weights not found at {path} and downloading them failed ({reason}); "
                f"fetch {pytorch_fid.FID_WEIGHTS_URL} to {path} or set eval.pytorch_inception_path"
            ) from None
    network = pytorch_inception_network()
    try:
        network.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except Exception as exc:
        raise GnPluginError(f"{path} is not pytorch-fid's Inception weights ({type(exc).__name__}: {exc})") from None
    fc_weight = network.fc.weight.detach().to(device)
    network.fc = nn.Identity()
    return network.to(device).eval().requires_grad_(False), fc_weight
