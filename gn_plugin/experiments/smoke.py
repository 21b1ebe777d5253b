"""Smoke run of every shipped recipe: a few steps on ``fake`` data plus one evaluation.

The evaluation uses a small TorchScript stand-in with the call signature of clean-fid's Inception
file, so it runs without the real weights (and without internet). On a GPU machine::

    python -m gn_plugin.experiments.smoke --device cuda --steps 20 --report smoke.md

The CPU test suite runs the same function with two steps and narrow models.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from gn_plugin.config import RECIPES, Config, load_config
from gn_plugin.training.loop import train
from gn_plugin.training.run_dir import RunFiles


class _StandInLayers(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.conv = nn.Conv2d(3, 8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[2] == 299 and x.shape[3] == 299, "layers expect 299x299"
        assert bool(x.min() >= -1.0) and bool(x.max() <= 1.0), "layers expect (pixels - 128) / 128"
        return torch.relu(self.conv(self.pool(x)))


class StandInInception(nn.Module):
    """The structure and forward signature of ``inception-2015-12-05.pt``: ``layers``, ``output``, two flags.

    Like the real file, the forward takes pixels in [0, 255] at any size and resizes them to 299
    the way TF's ``resize_bilinear`` does (clean-fid's ``legacy_tensorflow`` relies on it); ``layers``
    expects 299×299 inputs already scaled to [-1, 1].
    """

    def __init__(self) -> None:
        super().__init__()
        self.layers = _StandInLayers()
        self.output = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor, return_features: bool = False, no_output_bias: bool = False) -> torch.Tensor:
        assert bool(x.min() >= 0.0) and bool(x.max() <= 255.0), "expects pixels in [0, 255]"
        batch, channels, height, width = x.shape
        theta = torch.eye(2, 3, device=x.device)
        theta[0, 2] += theta[0, 0] / width - theta[0, 0] / 299
        theta[1, 2] += theta[1, 1] / height - theta[1, 1] / 299
        grid = nn.functional.affine_grid(theta.unsqueeze(0).repeat(batch, 1, 1), [batch, channels, 299, 299], align_corners=False)
        x = nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        features = self.layers((x - 128) / 128).reshape(x.shape[0], -1)
        if return_features:
            return features
        weight_only = nn.functional.linear(features, self.output.weight)
        logits = weight_only if no_output_bias else self.output(features)
        return torch.softmax(logits, dim=1)


def write_stand_in_inception(path: Path, seed: int = 0) -> Path:
    """Script :class:`StandInInception` with fixed weights and save it to ``path``."""
    torch.manual_seed(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.script(StandInInception()).save(str(path))
    return path


def shipped_recipes(root: Path = RECIPES) -> list[Path]:
    """Every runnable shipped recipe (method files, not the shared ``_recipe.yaml``)."""
    return sorted(p for p in root.glob("*/*/*.yaml") if not p.name.startswith("_")) + sorted(
        p for p in root.glob("digits/*.yaml") if not p.name.startswith("_")
    )


def smoke_config(path: Path, *, inception: Path, cache_dir: Path, steps: int, width: float, batch: int, device: str) -> Config:
    """The recipe at ``path`` on ``fake`` data of the model's shape, shortened to ``steps``."""
    recipe = load_config(path)
    conditional = recipe.model.conditional
    overrides = [
        "data.name=fake", f"data.root={cache_dir}", "data.num_workers=0",
        f"model.width={width}", f"train.steps={steps}", f"train.batch_size_d={batch}", f"train.batch_size_g={batch}",
        f"train.device={device}", f"train.log_every={steps}", f"train.sample_every={steps}", "train.sample_count=4",
        f"train.checkpoint_every={steps}", "eval.every=0", f"eval.num_samples={2 * batch}", f"eval.batch_size={batch}",
        f"eval.inception_path={inception}", f"eval.cache_dir={cache_dir}",
    ]
    if recipe.data.name == "digits":  # the digits recipes keep their own data and metric space
        overrides = [o for o in overrides if not o.startswith(("data.", "eval.inception_path"))]
        overrides[overrides.index(f"model.width={width}")] = "model.width=0.25"
        return load_config(path, overrides)
    config = load_config(path, overrides)
    # the recipe's own data options (a held-out split, say) belong to its data set, not to fake
    config.data.options = {"num_classes": 10 if conditional else 0, "size": 8 * batch, "channels": 3}
    return config


def run_all(out: Path, *, steps: int, width: float, batch: int, device: str) -> list[dict]:
    """Train and evaluate every shipped recipe briefly; one row per recipe with its time and metrics."""
    inception = write_stand_in_inception(out / "stand-in-inception.pt")
    rows = []
    for path in shipped_recipes():
        config = smoke_config(path, inception=inception, cache_dir=out / "cache", steps=steps, width=width, batch=batch, device=device)
        name = "-".join(path.with_suffix("").parts[-3:]) if path.parent.name != "digits" else f"digits-{path.stem}"
        started = time.perf_counter()
        summary = train(config, out / name, progress=False)
        last = RunFiles(out / name).read_results()[-1]
        rows.append({"recipe": name, "seconds": time.perf_counter() - started, "steps": summary["steps"], "last_eval": last})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--out", default=None, help="working directory (default: a temporary one)")
    parser.add_argument("--report", default=None, help="write a Markdown table here")
    args = parser.parse_args(argv)
    out = Path(args.out or tempfile.mkdtemp(prefix="gn-smoke-"))
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    started = time.perf_counter()
    rows = run_all(out, steps=args.steps, width=args.width, batch=args.batch, device=args.device)
    lines = [
        f"Smoke run on {device_name}: {len(rows)} recipes x {args.steps} steps, width {args.width}, batch {args.batch}, "
        f"torch {torch.__version__}, total {time.perf_counter() - started:.0f} s",
        "", "| recipe | seconds |", "|---|---|",
        *[f"| {r['recipe']} | {r['seconds']:.1f} |" for r in rows],
    ]
    report = "\n".join(lines)
    print(report)
    if args.report:
        Path(args.report).write_text(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
