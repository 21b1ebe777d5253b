"""``gnbench perf``: the time and peak memory of one training iteration per method, as ratios to SN.

An iteration is :func:`gn_plugin.training.loop.train_iteration`: n_dis D steps, one G step, the EMA
update and the lr schedules, exactly as training runs them. Every variant is a CIFAR-10 recipe
(``yaml_configs/cifar10/cnn`` for cnn32, ``.../resnet`` for resnet32, so the recipes' batch sizes and
n_dis) on ``fake`` data of the same shape, plus the overrides of its settings group. All variants
of a model are built in this one process; each repetition times one iteration of every variant, in
a rotating order, and the ratios are medians over repetitions of time / time of the SN variant of the
same settings group (the ``fp32`` one where the group has none) in the same repetition, so a
machine that slows down for a while slows both sides of a ratio::

    gnbench perf                                            # CPU here: cnn32, fp32 and naive, a few minutes
    gnbench perf --full                                     # CPU: both models, every CPU settings group
    python -m gn_plugin.experiments.perf --device cuda --write-docs docs/performance.md

Peak memory is what one iteration allocates at its peak above the resting state (weights, optimiser
state, EMA, data; gradients freed first). On CUDA: ``torch.cuda.max_memory_allocated`` minus
``memory_allocated`` before the iteration. On the CPU, which has no allocator statistics, the bytes
of every tensor storage created during the iteration are added up while alive (a
``TorchDispatchMode`` sees each op's outputs; a weak reference sees each storage freed); buffers a
kernel allocates internally and frees before returning are not seen.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import re
import statistics
import sys
import tempfile
import time
import warnings
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from gn_plugin.config import RECIPES, Config, load_config
from gn_plugin.errors import GnPluginError
from gn_plugin.training.build import setup
from gn_plugin.training.distributed import ProcessGroup
from gn_plugin.training.loop import train_iteration
from gn_plugin.training.run_dir import RunFiles
from gn_plugin.training.state import Training

#: model -> its recipe folder under yaml_configs
MODELS = {"cnn32": "cifar10/cnn", "resnet32": "cifar10/resnet"}
METHODS = ("none", "sn", "gn", "gn-cr", "wgan-gp")
#: settings group -> (methods, config overrides, what it shows)
GROUPS: dict[str, tuple[tuple[str, ...], tuple[str, ...], str]] = {
    "fp32": (METHODS, (), "the recipes as they are (every optimisation that is exact is on)"),
    "naive": (
        ("gn", "gn-cr"),
        ("train.cheap_discriminator_step='off'", "train.cheap_generator_step='off'", "train.fuse_consistency=false"),
        "none of GN's exact optimisations: double backprop in both steps, GN-CR's view in its own pass",
    ),
    "full-d-step": (("gn", "gn-cr"), ("train.cheap_discriminator_step='off'",), "GN's D step by plain double backprop"),
    "full-g-step": (("gn",), ("train.cheap_generator_step='off'",), "GN's G step by double backprop"),
    "separate-cr": (("gn-cr",), ("train.fuse_consistency=false",), "GN-CR's augmented view in its own GN pass"),
    "channels-last": (("sn", "gn", "gn-cr"), ("train.channels_last=true",), "NHWC memory format"),
    "tf32": (("sn", "gn", "gn-cr"), ("train.precision=tf32",), "TF32 convolutions and matmuls (CUDA only)"),
    "bf16": (("sn", "gn", "gn-cr"), ("train.precision=bf16",), "bfloat16 autocast (GN's D step by double backprop)"),
    "bf16-channels-last": (
        ("sn", "gn", "gn-cr"), ("train.precision=bf16", "train.channels_last=true"), "bfloat16 autocast and NHWC"
    ),
    "cuda-graph": (
        ("sn", "gn", "gn-cr", "wgan-gp"), ("train.cuda_graph=true",), "the D step captured once as a CUDA graph and replayed"
    ),
}
CUDA_ONLY_GROUPS = {"cuda-graph"}
CPU_GROUPS = ["fp32", "naive", "full-d-step", "full-g-step", "separate-cr"]


@dataclass(frozen=True)
class Plan:
    """What a run measures by default: models, settings groups, repetitions, warm-up, time limit (s)."""

    models: tuple[str, ...]
    groups: tuple[str, ...]
    reps: int
    warmup: int
    time_limit: float | None


#: (device, --full) -> the defaults; the CPU ones without --full finish within minutes on 2 cores
PLANS = {
    ("cpu", False): Plan(("cnn32",), ("fp32", "naive"), reps=3, warmup=1, time_limit=60.0),
    ("cpu", True): Plan(tuple(MODELS), tuple(CPU_GROUPS), reps=5, warmup=1, time_limit=None),
    ("cuda", False): Plan(tuple(MODELS), tuple(GROUPS), reps=30, warmup=3, time_limit=150.0),
    ("cuda", True): Plan(tuple(MODELS), tuple(GROUPS), reps=30, warmup=3, time_limit=150.0),
}
#: (model, numerator method, denominator method, limit, what) -- the issue's targets, fp32 group
TARGETS = [
    ("cnn32", "gn", "sn", 1.5, "time"),
    ("resnet32", "gn", "sn", 2.0, "time"),
    ("cnn32", "gn-cr", "gn", 1.4, "time"),
    ("resnet32", "gn-cr", "gn", 1.4, "time"),
    ("cnn32", "gn", "sn", 2.0, "memory"),
    ("resnet32", "gn", "sn", 2.0, "memory"),
]


class TensorMemory(TorchDispatchMode):
    """While active: the bytes held by tensor storages created in it, and their high-water mark ``peak``."""

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = 0
        self._sizes: dict[int, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        # views and in-place results share an input's storage: nothing new was allocated for them
        inputs = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for tensor in tree_leaves(out):
            if isinstance(tensor, torch.Tensor) and tensor.untyped_storage().data_ptr() not in inputs:
                self._track(tensor.untyped_storage())
        return out

    def _track(self, storage: torch.UntypedStorage) -> None:
        key = storage.data_ptr()
        if key == 0 or key in self._sizes:  # empty, or already counted
            return
        self._sizes[key] = storage.nbytes()
        self.live += storage.nbytes()
        self.peak = max(self.peak, self.live)
        weakref.finalize(storage, self._free, key)

    def _free(self, key: int) -> None:
        self.live -= self._sizes.pop(key)


@dataclass
class Variant:
    """One method under one settings group, on one model, and what was measured for it."""

    model: str
    group: str
    method: str
    config: Config
    seconds: list[float] = field(default_factory=list)
    peak_bytes: int = 0
    host_syncs: int | None = None
    error: str | None = None  # why it could not be measured (e.g. a CUDA graph that failed to capture)


def variant_config(model: str, group: str, method: str, device: str, overrides: list[str]) -> Config:
    """The recipe of ``method`` for ``model`` on fake data, with the group's and the user's overrides."""
    return load_config(
        RECIPES / MODELS[model] / f"{method}.yaml",
        ["data.name=fake", "data.num_workers=0", "data.options={size: 1024}", f"train.device={device}",
         "eval.every=0", *GROUPS[group][1], *overrides],
    )


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_iteration(t: Training) -> float:
    """Seconds for one training iteration, from an idle device to an idle device."""
    synchronize(t.device)
    started = time.perf_counter()
    train_iteration(t)
    synchronize(t.device)
    return time.perf_counter() - started


def peak_iteration_memory(t: Training) -> int:
    """Bytes one iteration allocates at its peak above the resting state (gradients freed first)."""
    t.optimizer_d.zero_grad(set_to_none=True)
    t.optimizer_g.zero_grad(set_to_none=True)
    gc.collect()
    if t.device.type == "cuda":
        synchronize(t.device)
        torch.cuda.reset_peak_memory_stats(t.device)
        resting = torch.cuda.memory_allocated(t.device)
        train_iteration(t)
        synchronize(t.device)
        return torch.cuda.max_memory_allocated(t.device) - resting
    with TensorMemory() as memory:
        train_iteration(t)
    return memory.peak


def count_host_syncs(t: Training) -> int:
    """Synchronising CUDA calls in one iteration, as ``torch.cuda.set_sync_debug_mode`` reports them."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            train_iteration(t)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


@dataclass
class Prepared:
    """The variants of one model, built and warmed up, and how long each warm-up iteration took."""

    model: str
    variants: list[Variant]
    runs: list[tuple[Variant, Training]]  # the variants that could run, with their training state
    warmup_seconds: dict[str, float] = field(default_factory=dict)  # "group/method" -> one warm-up iteration


def prepare_model(model: str, groups: list[str], *, device: str, warmup: int, overrides: list[str]) -> Prepared:
    """Build every variant of ``model`` and run its warm-up iterations (each timed, for the estimate)."""
    unused_run_dir = RunFiles(Path(tempfile.gettempdir()) / "gn-perf", writer=False)  # a non-writer writes nothing
    prepared = Prepared(model, [], [])
    for group in groups:
        for method in GROUPS[group][0]:
            variant = Variant(model, group, method, variant_config(model, group, method, device, overrides))
            prepared.variants.append(variant)
            try:  # one variant that cannot run (say, a failed capture) must not cost the others
                t = setup(variant.config, unused_run_dir, ProcessGroup())
                for _ in range(warmup):
                    prepared.warmup_seconds[f"{group}/{method}"] = timed_iteration(t)
            except GnPluginError as exc:
                variant.error = str(exc)
                print(f"{model} {group} {method}: not measured: {exc}", file=sys.stderr, flush=True)
                continue
            prepared.runs.append((variant, t))
    return prepared


def remaining_seconds(prepared: Prepared, *, reps: int, time_limit: float | None, cuda: bool) -> float:
    """Estimated seconds :func:`measure_prepared` takes: a memory pass (and a sync count on CUDA) per
    variant, then ``reps`` timed repetitions, the repetitions capped by ``time_limit``."""
    iteration = sum(prepared.warmup_seconds.values())  # one iteration of every variant
    repetitions = iteration * reps if time_limit is None else min(iteration * reps, time_limit + iteration)
    return iteration * (1 + cuda) + repetitions


def measure_prepared(prepared: Prepared, *, reps: int, time_limit: float | None) -> list[Variant]:
    """Take each variant's memory, then time interleaved repetitions of all of them.

    With ``time_limit`` (seconds), no new repetition starts after it has passed (at least one runs).
    """
    runs = prepared.runs
    for variant, t in runs:
        variant.peak_bytes = peak_iteration_memory(t)
        if t.device.type == "cuda":
            variant.host_syncs = count_host_syncs(t)
    started = time.perf_counter()
    for rep in range(reps):
        if rep and time_limit is not None and time.perf_counter() - started > time_limit:
            break
        shift = rep % len(runs)
        for variant, t in runs[shift:] + runs[:shift]:
            variant.seconds.append(timed_iteration(t))
    return prepared.variants


def measure_model(
    model: str, groups: list[str], *, device: str, reps: int, warmup: int, overrides: list[str], time_limit: float | None
) -> list[Variant]:
    """Build every variant of ``model``, warm each up, take its memory, then time interleaved repetitions."""
    prepared = prepare_model(model, groups, device=device, warmup=warmup, overrides=overrides)
    return measure_prepared(prepared, reps=reps, time_limit=time_limit)


# -- figures ---------------------------------------------------------------------------------------
def find(variants: list[Variant], model: str, group: str, method: str) -> Variant | None:
    return next((v for v in variants if (v.model, v.group, v.method) == (model, group, method)), None)


def baseline(variants: list[Variant], variant: Variant) -> Variant | None:
    """The SN variant a row is compared with: same model and group, else the model's fp32 SN."""
    return find(variants, variant.model, variant.group, "sn") or find(variants, variant.model, "fp32", "sn")


def time_ratios(a: Variant, b: Variant) -> list[float]:
    """a's time over b's time in the same repetition, for each repetition."""
    return [x / y for x, y in zip(a.seconds, b.seconds)]


def time_ratio(a: Variant, b: Variant) -> float:
    """Median over repetitions of a's time over b's time in the same repetition."""
    return statistics.median(time_ratios(a, b))


def memory_ratio(a: Variant, b: Variant) -> float:
    return a.peak_bytes / b.peak_bytes if b.peak_bytes else float("nan")


def target_rows(variants: list[Variant]) -> list[tuple[str, float, float]]:
    """``(description, measured, limit)`` for each target whose variants were measured."""
    rows = []
    for model, top, bottom, limit, what in TARGETS:
        a, b = find(variants, model, "fp32", top), find(variants, model, "fp32", bottom)
        if a is None or b is None:
            continue
        measured = time_ratio(a, b) if what == "time" else memory_ratio(a, b)
        n_dis = a.config.train.n_dis
        rows.append((f"{model} (n_dis {n_dis}): {top} {what} / {bottom} {what}", measured, limit))
    return rows


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpuinfo = Path("/proc/cpuinfo")
    names = re.findall(r"model name\s*:\s*(.+)", cpuinfo.read_text()) if cpuinfo.exists() else []
    return f"CPU ({names[0] if names else 'unknown'}), {torch.get_num_threads()} threads"


def markdown(all_variants: list[Variant], device: torch.device, command: str, warmup: int) -> str:
    """The section the docs page shows: how it was measured, the table, the targets."""
    variants = [v for v in all_variants if v.error is None]
    reps = min(len(v.seconds) for v in variants)
    cuda = device.type == "cuda"
    memory_how = (
        "`torch.cuda.max_memory_allocated` minus the memory allocated before the iteration"
        if cuda else "bytes of the tensor storages the iteration creates, while alive (see `gn_plugin/experiments/perf.py`)"
    )
    lines = [
        f"### {device_name(device)}",
        "",
        (
            f"`{command}` on {datetime.date.today().isoformat()}, torch {torch.__version__}: {reps} timed "
            f"iterations per variant after {warmup} warm-up iteration(s), variants interleaved in a rotating order "
            "in one process; CIFAR-10 recipes (batch D / G, n_dis as listed) on fake data. "
            "*ms* is the median time of one iteration (n_dis D steps + one G step + EMA); *× sn* is the median "
            "(and range) over repetitions of the iteration's time over the same repetition's SN iteration with the "
            "same settings. "
            f"*Peak MiB* is the memory one iteration allocates at its peak above the resting state: {memory_how}."
        ),
        "",
        "| model | n_dis | batch D / G | settings | method | ms / iteration | × sn | peak MiB | × sn |"
        + (" host syncs |" if cuda else ""),
        "|---|---|---|---|---|---|---|---|---|" + ("---|" if cuda else ""),
    ]
    for v in variants:
        train = v.config.train
        base = baseline(variants, v)
        ratios = time_ratios(v, base) if base else []
        ratio = f"{statistics.median(ratios):.2f} ({min(ratios):.2f}–{max(ratios):.2f})" if ratios else "–"
        memory = f"{memory_ratio(v, base):.2f}" if base else "–"
        lines.append(
            f"| {v.model} | {train.n_dis} | {train.batch_size_d} / {train.batch_size_g} | {v.group} | {v.method} | "
            f"{1000 * statistics.median(v.seconds):.0f} | {ratio} | {v.peak_bytes / 2**20:.0f} | {memory} |"
            + (f" {v.host_syncs} |" if cuda else "")
        )
    targets = target_rows(variants)
    if targets:
        lines += ["", "| target (fp32 settings) | measured | limit | met |", "|---|---|---|---|"]
        lines += [f"| {what} | {value:.2f} | {limit} | {'yes' if value <= limit else 'no'} |" for what, value, limit in targets]
    failed = [v for v in all_variants if v.error is not None]
    if failed:
        lines += ["", "Not measured: " + "; ".join(f"{v.model} *{v.group}* {v.method} ({v.error})" for v in failed) + "."]
    groups = dict.fromkeys(v.group for v in all_variants)
    lines += ["", "Settings: " + "; ".join(f"*{g}*: {GROUPS[g][2]}" for g in groups) + "."]
    return "\n".join(lines)


def write_section(path: Path, key: str, body: str) -> None:
    """Put ``body`` between ``<!-- perf:KEY -->`` and ``<!-- /perf:KEY -->`` in ``path`` (appended when absent)."""
    start, end = f"<!-- perf:{key} -->", f"<!-- /perf:{key} -->"
    block = f"{start}\n{body}\n{end}"
    text = path.read_text() if path.exists() else ""
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + block + "\n"
    path.write_text(text)


def record(variants: list[Variant]) -> list[dict[str, Any]]:
    """Plain data of every measurement, for ``--json``."""
    rows = []
    for v in variants:
        base = baseline(variants, v)
        rows.append({
            "model": v.model, "group": v.group, "method": v.method, "seconds": v.seconds,
            "peak_bytes": v.peak_bytes, "host_syncs": v.host_syncs, "error": v.error,
            "ratio_to_sn": time_ratio(v, base) if base and v.seconds and base.seconds else None,
            "train": v.config.train.model_dump(
                mode="json", include={"n_dis", "batch_size_d", "batch_size_g", "precision", "channels_last"}
            ),
        })
    return rows


# -- command line ----------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    def default(option: str) -> str:
        def shown(value) -> str:
            return " ".join(value) if isinstance(value, tuple) else "none" if value is None else f"{value:g}"

        return "; ".join(
            f"{device}{' --full' * full}: {shown(getattr(plan, option))}"
            for (device, full), plan in PLANS.items() if device == "cpu" or not full  # cuda --full is cuda's default
        )

    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--full", action="store_true",
        help="the whole matrix on the CPU: both models, every CPU settings group, 5 repetitions "
        "(well over 30 minutes on 2 cores); on CUDA the defaults are the whole matrix",
    )
    parser.add_argument("--models", nargs="+", choices=list(MODELS), help=f"models (default: {default('models')})")
    parser.add_argument("--groups", nargs="+", choices=list(GROUPS), help=f"settings groups (default: {default('groups')})")
    parser.add_argument("--reps", type=int, help=f"timed iterations per variant (default: {default('reps')})")
    parser.add_argument("--warmup", type=int, help=f"untimed iterations per variant first (default: {default('warmup')})")
    parser.add_argument(
        "--time-limit", type=float,
        help=f"seconds of timed repetitions per model after which no new one starts (default: {default('time_limit')})",
    )
    parser.add_argument("--threads", type=int, help="CPU threads (torch.set_num_threads; default: torch's)")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="overrides for every variant")
    parser.add_argument("--json", help="write every measurement here")
    parser.add_argument("--write-docs", metavar="MD", help="put the table into this Markdown page (section per device kind)")


def minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def command_perf(args: argparse.Namespace) -> None:
    cuda = args.device == "cuda"
    if args.threads:
        torch.set_num_threads(args.threads)
    plan = PLANS[(args.device, args.full)]
    models = args.models or list(plan.models)
    groups = args.groups or list(plan.groups)
    if not cuda and CUDA_ONLY_GROUPS & set(groups):
        raise GnPluginError(f"--groups {' '.join(sorted(CUDA_ONLY_GROUPS & set(groups)))}: needs --device cuda")
    reps = args.reps or plan.reps
    warmup = args.warmup if args.warmup is not None else plan.warmup
    time_limit = args.time_limit if args.time_limit is not None else plan.time_limit
    command = " ".join(
        ["gnbench perf", f"--device {args.device}", f"--models {' '.join(models)}", f"--groups {' '.join(groups)}",
         f"--reps {reps}", f"--warmup {warmup}"]
        + ([f"--time-limit {time_limit:g}"] if time_limit is not None else [])
        + ([f"--threads {args.threads}"] if args.threads else [])
        + ([f"--set {' '.join(args.set)}"] if args.set else [])
    )
    count = sum(len(GROUPS[group][0]) for group in groups) * len(models)
    print(f"{command}: {count} variants; estimating the duration from a warm-up iteration of each", file=sys.stderr, flush=True)
    started = time.perf_counter()
    prepared = [prepare_model(model, groups, device=args.device, warmup=warmup, overrides=args.set) for model in models]
    if warmup:
        left = sum(remaining_seconds(p, reps=reps, time_limit=time_limit, cuda=cuda) for p in prepared)
        warmed = time.perf_counter() - started
        print(f"estimated duration: about {minutes(warmed + left)} ({minutes(left)} after the warm-up)", file=sys.stderr, flush=True)
    variants: list[Variant] = []
    for model in prepared:
        variants += measure_prepared(model, reps=reps, time_limit=time_limit)
        print(f"{model.model}: measured {len(variants)} variants so far", file=sys.stderr, flush=True)
    device = torch.device(args.device)
    table = markdown(variants, device, command, warmup)
    print(table)
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"command": command, "device": device_name(device), "torch": torch.__version__, "rows": record(variants)}, indent=1
        ))
    if args.write_docs:
        write_section(Path(args.write_docs), args.device, table)


def add_command(subparsers: argparse._SubParsersAction) -> None:
    """Register ``gnbench perf``."""
    parser = subparsers.add_parser("perf", help="time and peak memory of a training iteration per method, as ratios to SN")
    add_arguments(parser)
    parser.set_defaults(handler=command_perf)


def main(argv: list[str] | None = None) -> int:
    """``python -m gn_plugin.experiments.perf``: the same as ``gnbench perf``."""
    parser = argparse.ArgumentParser(prog="python -m gn_plugin.experiments.perf", description=__doc__.splitlines()[0])
    add_arguments(parser)
    try:
        command_perf(parser.parse_args(argv))
    except GnPluginError as exc:
        print(f"perf: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
