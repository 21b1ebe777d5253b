"""gnbench: train, evaluate, sample, list components, benchmark.

User mistakes (bad config, unknown component, missing file, broken plugin) print one line and exit 2,
without a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Any

from gn_plugin.config import load_config
from gn_plugin.errors import GnPluginError
from gn_plugin.experiments import bench, lipschitz, perf
from gn_plugin.registry import KINDS, registry
from gn_plugin.training.loop import train
from gn_plugin.training.saved_run import evaluate_run, sample_run


def default_run_dir(config_path: Path) -> Path:
    """``runs/<path below yaml_configs, dashed>``: ``yaml_configs/cifar10/cnn/gn.yaml`` -> ``runs/cifar10-cnn-gn``."""
    parts = config_path.with_suffix("").parts
    below = [index for index, part in enumerate(parts) if part in ("yaml_configs", "recipes")]
    if below:
        parts = parts[below[-1] + 1 :]
    else:
        parts = parts[-1:]
    return Path("runs") / "-".join(parts)


def command_train(args: argparse.Namespace) -> None:
    # `train RUN --resume` continues RUN as configured; `train CONFIG [--out RUN] --resume` continues RUN
    # where CONFIG resolves to RUN's config apart from the keys that may change on resume (train checks).
    source = Path(args.config)
    if args.resume and source.is_dir():
        if args.out and Path(args.out).resolve() != source.resolve():
            raise GnPluginError(f"--resume: give the run directory once (got {source} and --out {args.out})")
        run_dir, config = source, load_config(source / "config.yaml", args.set)
    else:
        run_dir = Path(args.out) if args.out else default_run_dir(source)
        config = load_config(source, args.set)
    summary = train(config, run_dir, resume=args.resume, progress=not args.no_progress)
    print(json.dumps({"run_dir": str(run_dir), **summary}))


def command_eval(args: argparse.Namespace) -> None:
    for record in evaluate_run(Path(args.run_dir), checkpoint=args.checkpoint, overrides=args.set):
        print(json.dumps(record))


def command_sample(args: argparse.Namespace) -> None:
    if args.count < 1:
        raise GnPluginError(f"--count must be at least 1, got {args.count}")
    path = sample_run(Path(args.run_dir), checkpoint=args.checkpoint, out=args.out, count=args.count, use_ema=not args.raw)
    print(path)


def command_list(args: argparse.Namespace) -> None:
    kinds = [args.kind] if args.kind else list(KINDS)
    for kind in kinds:
        reg = registry(kind)
        for name in reg.names():
            line = f"{kind:<12} {name:<14}"
            try:
                info = reg.info(name)
                line += f" {info.provider:<20} {info.target}"
                if args.detail:
                    doc = (reg.get(name).__doc__ or "").strip().splitlines()
                    line += f"  {doc[0] if doc else ''}"
            except GnPluginError as exc:  # one broken plugin must not hide the others
                line += f" ERROR: {exc}"
            print(line)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gnbench", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train one run from a YAML config")
    train.add_argument("config", help="YAML config, or with --resume the run directory")
    train.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="override config values")
    train.add_argument("--out", help="run directory (default: runs/<config name>)")
    train.add_argument(
        "--resume", action="store_true",
        help="continue the run in the given run directory (or in --out, whose config CONFIG must match); "
        "only train.steps, the log/sample/checkpoint intervals, data.num_workers and eval.* may change",
    )
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.set_defaults(handler=command_train)

    evaluate = commands.add_parser("eval", help="evaluate a run's raw and EMA generators")
    evaluate.add_argument("run_dir")
    evaluate.add_argument("--checkpoint", choices=["latest", "best"], default="best")
    evaluate.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="override eval.* values")
    evaluate.set_defaults(handler=command_eval)

    sample = commands.add_parser("sample", help="write an image grid of a run's generator")
    sample.add_argument("run_dir")
    sample.add_argument("--checkpoint", choices=["latest", "best"], default="latest")
    sample.add_argument("--out", help="PNG path (default: RUN_DIR/samples/<checkpoint>.png)")
    sample.add_argument("--count", type=int, default=64)
    sample.add_argument("--raw", action="store_true", help="the raw generator instead of the EMA one")
    sample.set_defaults(handler=command_sample)

    listing = commands.add_parser("list", help="registered components, their kind and providing distribution")
    listing.add_argument("kind", nargs="?", choices=list(KINDS), help="one kind only")
    listing.add_argument("--detail", action="store_true", help="load each plugin and show its description")
    listing.set_defaults(handler=command_list)

    bench.add_command(commands)
    lipschitz.add_command(commands)
    perf.add_command(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``gnbench`` command."""
    args = build_parser().parse_args(argv)
    with warnings.catch_warnings():
        warnings.showwarning = show_warning
        try:
            args.handler(args)
        except GnPluginError as exc:
            print(f"gnbench: error: {exc}", file=sys.stderr)
            return getattr(exc, "exit_code", 2)
        except OSError as exc:  # a full or read-only disk, a file that vanished: the environment, not a bug
            print(f"gnbench: error: {' '.join(str(exc).split())}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("gnbench: interrupted", file=sys.stderr)
            return 130
    return 0


def show_warning(message: Warning | str, category: type[Warning], *location: Any, **options: Any) -> None:
    """A warning as one line, like an error (a clash of plugin names, a deprecation)."""
    print(f"gnbench: warning: {message}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
