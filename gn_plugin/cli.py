"""gnbench: train, evaluate, sample, list components, benchmark, validate metrics.

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
from gn_plugin.experiments import assets, bench, lipschitz, metric_validation, perf
from gn_plugin.registry import KINDS, first_sentence, options, plain_text, registry
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
    outside = [item for item in args.set if not item.startswith("eval.")]
    if outside:
        raise GnPluginError(
            f"--set {outside[0]}: gnbench eval takes eval.* keys only (the rest of the run is fixed by its config.yaml)"
        )
    for record in evaluate_run(Path(args.run_dir), checkpoint=args.checkpoint, overrides=args.set, log=print_status):
        print(json.dumps(record))


def command_sample(args: argparse.Namespace) -> None:
    if args.count < 1:
        raise GnPluginError(f"--count must be at least 1, got {args.count}")
    path = sample_run(
        Path(args.run_dir), checkpoint=args.checkpoint, out=args.out, count=args.count, use_ema=not args.raw,
        log=print_status,
    )
    print(path)


def print_status(line: str) -> None:
    """A line for the reader on stderr, keeping stdout for what scripts read (JSON records, paths)."""
    print(line, file=sys.stderr)


def describe_component(kind: str, name: str) -> list[str]:
    """The first sentence of a component's docstring and its options with their defaults, as plain text."""
    factory = registry(kind).get(name)
    shown = options(kind, factory)
    return [plain_text(first_sentence(factory))] + ([f"options: {', '.join(shown)}"] if shown else [])


def command_list(args: argparse.Namespace) -> None:
    kinds = [args.kind] if args.kind else list(KINDS)
    for kind in kinds:
        reg = registry(kind)
        for name in reg.names():
            line, details = f"{kind:<12} {name:<14}", []
            try:
                info = reg.info(name)
                line += f" {info.provider:<20} {info.target}"
                if args.detail:
                    details = describe_component(kind, name)
            except GnPluginError as exc:  # one broken plugin must not hide the others
                line += f" ERROR: {exc}"
            print(line)
            for detail in details:
                print(f"{'':<28}{detail}")


class DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` states each option's default, where it has one worth stating (not off, empty or none)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False, []) or not action.help:
            return action.help
        return super()._get_help_string(action)


CHECKPOINTS = {
    "best": "best: checkpoints/best.pt, the evaluation with the best eval.best_metric (latest.pt when there is none)",
    "latest": "latest: checkpoints/latest.pt, the last saved step",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gnbench", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train one run from a YAML config")
    train.add_argument("config", help="YAML config, or with --resume the run directory")
    train.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="override config values")
    train.add_argument("--out", help="run directory (default: runs/<config path below yaml_configs, dashed>)")
    train.add_argument(
        "--resume", action="store_true",
        help="continue the run in the given run directory (or in --out, whose config CONFIG must match); "
        "only train.steps, the log/sample/checkpoint intervals, data.num_workers and eval.* may change",
    )
    train.add_argument("--no-progress", action="store_true", help="no progress bars")
    train.set_defaults(handler=command_train)

    evaluate = commands.add_parser(
        "eval", help="evaluate a run's raw and EMA generators (best checkpoint by default)",
        description="Score the raw and EMA generators of one checkpoint; one JSON record per generator on stdout, "
        "appended to results.jsonl. " + "; ".join(CHECKPOINTS.values()) + ".",
    )
    evaluate.add_argument("run_dir", help="a run directory (config.yaml, checkpoints/)")
    evaluate.add_argument("--checkpoint", choices=["latest", "best"], default="best", help="which checkpoint to score")
    evaluate.add_argument(
        "--set", nargs="+", default=[], metavar="KEY=VALUE", help="override eval.* values (e.g. eval.num_samples=50000)"
    )
    evaluate.set_defaults(handler=command_eval)

    sample = commands.add_parser(
        "sample", help="write an image grid of a run's generator (latest checkpoint by default)",
        description="Write a PNG grid of samples of one checkpoint's EMA (or raw) generator and print its path. "
        + "; ".join(CHECKPOINTS.values()) + ".",
    )
    sample.add_argument("run_dir", help="a run directory (config.yaml, checkpoints/)")
    sample.add_argument("--checkpoint", choices=["latest", "best"], default="latest", help="which checkpoint to sample")
    sample.add_argument("--out", help="PNG path (default: RUN_DIR/samples/<checkpoint>_<ema|raw>_step<N>.png)")
    sample.add_argument("--count", type=int, default=64, help="images in the grid")
    sample.add_argument("--raw", action="store_true", help="the raw generator instead of the EMA one")
    sample.set_defaults(handler=command_sample)

    listing = commands.add_parser("list", help="registered components, their kind and providing distribution")
    listing.add_argument("kind", nargs="?", choices=list(KINDS), help="one kind only")
    listing.add_argument(
        "--detail", action="store_true", help="load each plugin and show its description and options with defaults"
    )
    listing.set_defaults(handler=command_list)

    assets.add_command(commands)
    bench.add_command(commands)
    lipschitz.add_command(commands)
    perf.add_command(commands)
    metric_validation.add_command(commands)
    for command in commands.choices.values():
        command.formatter_class = DefaultsFormatter
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``gnbench`` command."""
    args = build_parser().parse_args(argv)
    with warnings.catch_warnings():
        warnings.showwarning = show_warning
        try:
            return args.handler(args) or 0
        except GnPluginError as exc:
            print(f"gnbench: error: {exc}", file=sys.stderr)
            return getattr(exc, "exit_code", 2)
        except OSError as exc:  # a full or read-only disk, a file that vanished: the environment, not a bug
            print(f"gnbench: error: {' '.join(str(exc).split())}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("gnbench: interrupted", file=sys.stderr)
            return 130


def show_warning(message: Warning | str, category: type[Warning], *location: Any, **options: Any) -> None:
    """A warning as one line, like an error (a clash of plugin names, a deprecation)."""
    print(f"gnbench: warning: {message}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
