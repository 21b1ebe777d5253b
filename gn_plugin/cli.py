"""gnbench: train, evaluate, sample, list components, benchmark, validate metrics.

User mistakes (bad config, unknown component, missing file, broken plugin) print one line and exit 2,
without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from gn_plugin.errors import GnPluginError, Interrupted
from gn_plugin.registry import KINDS, first_sentence, options, plain_text, registry

# torch, matplotlib and clean-fid load in the command that needs them, so `gnbench --help` and
# `gnbench list` start in a fraction of a second.

#: subcommands an experiment module defines (``add_command``): its module is imported only when the
#: command is chosen; the listing in ``gnbench --help`` shows the help line kept here
EXPERIMENT_COMMANDS = {
    "assets": (
        "gn_plugin.experiments.assets",
        "files runs read from disk (data, Inception weights, reference statistics): check or fetch them",
    ),
    "bench": (
        "gn_plugin.experiments.bench",
        "run methods head to head from a benchmark spec; write results.csv, results.md, plots",
    ),
    "lipschitz": (
        "gn_plugin.experiments.lipschitz",
        "Theorem 5: empirical Lipschitz constant of SN and GN discriminators against depth",
    ),
    "perf": ("gn_plugin.experiments.perf", "time and peak memory of a training iteration per method, as ratios to SN"),
    "validate-metrics": (
        "gn_plugin.experiments.metric_validation",
        "score degraded real images as a benchmark scores samples (do its metrics rank them?) and check "
        "its finished runs for copies of training images",
    ),
}


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
    from gn_plugin.config import load_config

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
    if args.dry_run:
        dry_run(config, run_dir)
        return
    from gn_plugin.training.loop import train

    summary = train(config, run_dir, resume=args.resume, progress=not args.no_progress)
    print(json.dumps({"run_dir": str(run_dir), **summary}))


def dry_run(config: Any, run_dir: Path) -> None:
    """Print the resolved config as ``config.yaml`` would hold it; build every component once to check it."""
    import yaml

    from gn_plugin.training.build import check_components

    check_components(config)  # a bad component option fails here, as it would before the first step
    print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
    print_status(f"dry run: nothing trained; the run would write to {run_dir}")


def command_eval(args: argparse.Namespace) -> None:
    from gn_plugin.training.saved_run import evaluate_run

    outside = [item for item in args.set if not item.startswith("eval.")]
    if outside:
        raise GnPluginError(
            f"--set {outside[0]}: gnbench eval takes eval.* keys only (the rest of the run is fixed by its config.yaml)"
        )
    for record in evaluate_run(Path(args.run_dir), checkpoint=args.checkpoint, overrides=args.set, log=print_status):
        print(json.dumps(record))


def command_sample(args: argparse.Namespace) -> None:
    from gn_plugin.api import write_samples

    if args.count < 1:
        raise GnPluginError(f"--count must be at least 1, got {args.count}")
    path = write_samples(
        args.run_dir, checkpoint=args.checkpoint, out=args.out, count=args.count, generator=args.generator,
        classes=args.classes, interpolate=args.interpolate, seed=args.seed, log=print_status,
    )
    print(path)


def print_status(line: str) -> None:
    """A line for the reader on stderr, keeping stdout for what scripts read (JSON records, paths)."""
    print(line, file=sys.stderr)


def describe_component(kind: str, name: str) -> list[str]:
    """The first sentence of a component's docstring, its options with their defaults and, for a metric,
    its direction, as plain text."""
    factory = registry(kind).get(name)
    shown = options(kind, factory)
    lines = [plain_text(first_sentence(factory))] + ([f"options: {', '.join(shown)}"] if shown else [])
    if kind == "metric":
        from gn_plugin.metrics.base import describe_metric

        lines.append(describe_metric(name))
    return lines


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


def build_parser(commands_to_load: Iterable[str] | None = None) -> argparse.ArgumentParser:
    """The ``gnbench`` parser. ``commands_to_load``: the experiment commands whose modules are imported
    for their full options (None: all of them); the others are listed with their help line only."""
    parser = argparse.ArgumentParser(prog="gnbench", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train one run from a YAML config")
    train.add_argument("config", help="YAML config, or with --resume the run directory")
    train.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="override config values")
    train.add_argument("--out", help="run directory (default: runs/<config path below yaml_configs, dashed>)")
    train.add_argument(
        "--resume", action="store_true",
        help="continue the run in the given run directory (or in --out, whose config CONFIG must match); "
        "only train.steps, the log/sample/checkpoint intervals, train.threads, train.loggers, data.num_workers "
        "and eval.* may change",
    )
    train.add_argument("--no-progress", action="store_true", help="no progress bars")
    train.add_argument(
        "--dry-run", action="store_true",
        help="print the resolved config (as the run's config.yaml would hold it), check that every component "
        "builds with its options, and exit without training or writing anything",
    )
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
        "sample", help="write an image grid of a run's generators (latest checkpoint by default)",
        description="Write a PNG grid of samples of one checkpoint's generators and print its path: raw rows above "
        "EMA rows, each labelled, as in training's sample grids. Before the EMA has averaged three horizons "
        "(1 / (1 - train.ema.decay) steps) its samples lag the raw generator's, and the command says so. "
        + "; ".join(CHECKPOINTS.values()) + ".",
    )
    sample.add_argument("run_dir", help="a run directory (config.yaml, checkpoints/)")
    sample.add_argument("--checkpoint", choices=["latest", "best"], default="latest", help="which checkpoint to sample")
    sample.add_argument(
        "--out", help="PNG path (default: RUN_DIR/samples/<checkpoint>_<generator>_step<N>[_classes|_interpolate].png)"
    )
    sample.add_argument("--count", type=int, default=64, help="images in the grid, per generator")
    sample.add_argument(
        "--generator", choices=["auto", "both", "raw", "ema"], default="auto",
        help="auto: the meaningful ones at the checkpoint's step (the raw generator alone until the EMA has averaged "
        "three horizons, then raw rows above EMA rows); both: raw above EMA at any step; raw or ema: that one only",
    )
    sample.add_argument(
        "--classes", nargs="*", type=int, metavar="CLASS",
        help="conditional models: a row per class (all classes when none is named), the same z in each column",
    )
    sample.add_argument(
        "--interpolate", type=int, metavar="STEPS",
        help="rows of STEPS images, each row walking from one random z to another along the great circle (slerp)",
    )
    sample.add_argument("--seed", type=int, help="seed of the z (default: train.seed + 1, the z of training's grids)")
    sample.set_defaults(handler=command_sample)

    listing = commands.add_parser("list", help="registered components, their kind and providing distribution")
    listing.add_argument("kind", nargs="?", choices=list(KINDS), help="one kind only")
    listing.add_argument(
        "--detail", action="store_true",
        help="load each plugin and show its description and options with defaults (for a metric, its direction)",
    )
    listing.set_defaults(handler=command_list)

    for name, (module, help_line) in EXPERIMENT_COMMANDS.items():
        if commands_to_load is None or name in commands_to_load:
            importlib.import_module(module).add_command(commands)
        else:
            commands.add_parser(name, help=help_line)
    for command in commands.choices.values():
        command.formatter_class = DefaultsFormatter
    return parser


def positionals_after_set(argv: list[str]) -> list[str]:
    """``argv`` with a positional that follows ``--set``'s KEY=VALUE items moved before ``--set``.

    ``--set`` takes every item up to the next option, so ``train --set train.steps=3 CONFIG`` would
    read CONFIG as an override; an item without ``=`` is never one, so it is the positional.
    """
    result, in_set, set_at = [], False, 0
    for item in argv:
        if item == "--set":
            in_set, set_at = True, len(result)
        elif item.startswith("-"):
            in_set = False
        elif in_set and "=" not in item:
            result.insert(set_at, item)
            set_at += 1
            continue
        result.append(item)
    return result


def chosen_command(argv: list[str]) -> str | None:
    """The subcommand ``argv`` names (its first item that is not an option)."""
    return next((item for item in argv if not item.startswith("-")), None)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``gnbench`` command."""
    argv = positionals_after_set(sys.argv[1:] if argv is None else list(argv))
    args = build_parser(commands_to_load=[chosen_command(argv)]).parse_args(argv)
    with warnings.catch_warnings():
        warnings.showwarning = show_warning
        try:
            return args.handler(args) or 0
        except Interrupted as exc:  # a deliberate stop, not a failure: exit 128 + the signal (130 for Ctrl-C)
            print(f"gnbench: {exc}", file=sys.stderr)
            return exc.exit_code
        except GnPluginError as exc:
            print(f"gnbench: error: {exc}", file=sys.stderr)
            return getattr(exc, "exit_code", 2)
        except OSError as exc:  # a full or read-only disk, a file that vanished: the environment, not a bug
            print(f"gnbench: error: {' '.join(str(exc).split())}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:  # Ctrl-C outside a training loop (loading, building, evaluating)
            print("gnbench: stopped by Ctrl-C", file=sys.stderr)
            return 130


def show_warning(message: Warning | str, category: type[Warning], *location: Any, **options: Any) -> None:
    """A warning as one line, like an error (a clash of plugin names, a deprecation)."""
    print(f"gnbench: warning: {message}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
