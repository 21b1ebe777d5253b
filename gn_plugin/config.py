"""Run configuration: StudioGAN-style YAML, ``base:`` inheritance, ``--set`` overrides, a validated schema.

A config names its components (``norm``, ``loss``, ``regularizers``, ``model.name``, ``data.name``);
the runner reaches them only through the registry, so ``norm: gn`` versus ``norm: sn`` is the whole
difference between two runs. Validation (pydantic) rejects unknown keys, wrong types, out-of-range
values and unknown component names with one line naming the key path.
"""

from __future__ import annotations

import types
import typing
import difflib
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from gn_plugin.atomic import write_atomically
from gn_plugin.errors import GnPluginError
from gn_plugin.registry import registry

__all__ = [
    "RECIPES", "RESUMABLE_KEYS", "Config", "ComponentSpec", "EvalConfig", "load_config", "parse_overrides",
    "config_from_dict", "save_config", "resume_conflicts",
]

#: the shipped recipes and benchmark specs (package data; ``yaml_configs/`` in a checkout points here)
RECIPES = Path(__file__).resolve().parent / "recipes"


def _switch_from_yaml(value: Any) -> Any:
    # YAML 1.1 reads unquoted on/off (and yes/no) as booleans; they mean the switch's "on"/"off".
    if isinstance(value, bool):
        return "on" if value else "off"
    return value


#: a three-way switch: ``auto`` (where it applies), ``on`` (required: an error where it cannot apply), ``off``
Switch = Annotated[Literal["auto", "on", "off"], BeforeValidator(_switch_from_yaml)]


def _takes_number(annotation: Any) -> bool:
    """Whether a field holds an int or a float (possibly among other types, as in ``int | None``)."""
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    return any(option in (int, float) for option in (typing.get_args(annotation) if union else (annotation,)))


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic reads true as 1, so `steps: true` would train one step
        if isinstance(value, bool) and _takes_number(cls.model_fields[info.field_name].annotation):
            raise ValueError(f"expected a number, got {str(value).lower()}")
        return value


def _no_fixed_arguments(options: dict[str, Any], fixed: dict[str, str]) -> dict[str, Any]:
    """``options`` unless one of them is an argument the runner passes itself (``fixed``: name -> hint)."""
    for name in options:
        if name in fixed:
            raise ValueError(f"'{name}' cannot be an option: {fixed[name]}")
    return options


class ComponentSpec(Strict):
    """A registered component: ``name`` plus the options passed to its factory.

    In YAML either a bare name (``norm: gn``) or a mapping (``norm: {name: gn-cr, consistency_weight: 5}``).
    """

    name: str
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _from_name_or_mapping(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"name": value}
        if isinstance(value, dict) and "options" not in value:
            options = {k: v for k, v in value.items() if k != "name"}
            return {"name": value.get("name"), "options": options}
        return value

    def to_yaml(self) -> str | dict[str, Any]:
        return self.name if not self.options else {"name": self.name, **self.options}


def _known(kind: str, name: str) -> str:
    """``name`` if registered (imports nothing); else the registry's "unknown ... did you mean" line."""
    if name not in registry(kind).names():
        try:
            registry(kind).get(name)
        except GnPluginError as exc:
            raise ValueError(str(exc)) from None
    return name


class ModelConfig(Strict):
    name: str = Field("mlp", description="registered model (G and D pair)")
    z_dim: int = Field(128, gt=0, description="latent size; z ~ N(0, I)")
    width: float = Field(1.0, gt=0, description="multiplier of every channel count (narrow models for CPU runs)")
    conditional: bool = Field(False, description="class-conditional G and D (needs a labelled data set)")
    options: dict[str, Any] = Field(
        default_factory=dict, description="extra options of the model factory (e.g. depth, activation for mlp)"
    )

    @field_validator("name")
    @classmethod
    def _registered(cls, name: str) -> str:
        return _known("model", name)

    @field_validator("options")
    @classmethod
    def _not_fixed(cls, options: dict[str, Any]) -> dict[str, Any]:
        return _no_fixed_arguments(options, {
            "z_dim": "set model.z_dim", "width": "set model.width",
            "num_classes": "set model.conditional (the classes are the data set's)",
            "channels": "the data set's channels are used",
        })


class DataConfig(Strict):
    name: str = Field("digits", description="registered data set")
    root: str = Field("data", description="where the data set lives or is downloaded to")
    resolution: int | None = Field(None, gt=0, description="image size; null = the model's resolution")
    hflip: Switch = Field(
        "auto",
        description="random horizontal flip of the real training images, batched on the device: auto flips when the "
        "data set declares itself mirror-symmetric (CIFAR-10, STL-10, CelebA-HQ, LSUN; not digits); on flips any "
        "data set (a warning in log.txt where it is not mirror-symmetric); off never. true/false mean on/off. "
        "GN-CR's augmentation follows the data set's declaration, not this key",
    )
    num_workers: int = Field(
        2, ge=0, description="data loader workers for data sets read from disk (also decoding them for on_device)"
    )
    on_device: Switch = Field(
        "auto",
        description="on: decode a data set read from disk once at start-up into float32 tensors on the training "
        "device and index batches there (same batches, no loader per step); off: a DataLoader each step; "
        "auto: on for a CUDA device when the decoded set fits on_device_limit_mib. "
        "In-memory data sets (digits, fake) are always on the device",
    )
    on_device_limit_mib: int = Field(
        4096, gt=0,
        description="on_device auto: the most MiB the decoded images (N × C × R × R × 4 bytes) and labels may take",
    )
    options: dict[str, Any] = Field(default_factory=dict, description="extra options of the data set factory")

    @field_validator("name")
    @classmethod
    def _registered(cls, name: str) -> str:
        return _known("dataset", name)

    @field_validator("options")
    @classmethod
    def _not_fixed(cls, options: dict[str, Any]) -> dict[str, Any]:
        return _no_fixed_arguments(options, {
            "root": "set data.root", "resolution": "set data.resolution",
            "split": "training reads the train split (the real-vs-real floor the test split, where there is one)",
        })


class EmaConfig(Strict):
    decay: float = Field(0.9999, ge=0, lt=1, description="decay of the EMA of G's weights")
    start: int = Field(0, ge=0, description="steps before which the EMA copies G")


class TrainConfig(Strict):
    steps: int = Field(1000, gt=0, description="generator steps")
    n_dis: int = Field(1, gt=0, description="discriminator steps per generator step")
    batch_size_d: int = Field(64, gt=0, description="real and fake images per D step (global, over all processes)")
    batch_size_g: int = Field(128, gt=0, description="fake images per G step")
    lr_d: float = Field(2e-4, gt=0, description="Adam learning rate of D")
    lr_g: float = Field(2e-4, gt=0, description="Adam learning rate of G")
    betas: tuple[float, float] = Field((0.0, 0.9), description="Adam betas of both optimisers")
    lr_decay: Literal["none", "linear"] = Field(
        "none", description="linear: both learning rates fall to 0 at the last step"
    )
    ema: EmaConfig = Field(default_factory=EmaConfig, description="exponential moving average of G's weights")
    seed: int = Field(0, description="seed of weights, data order and every z")
    device: str = Field("auto", description="auto (GPU when there is one), cpu, cuda, cuda:N")
    cheap_generator_step: Switch = Field(
        "auto", description="GN's G step without double backprop, exact for piecewise-linear D (auto: where exact)"
    )
    cheap_discriminator_step: Switch = Field(
        "auto",
        description="GN's D step in four passes instead of six, exact for piecewise-linear D with every parameter "
        "in a Conv2d/Linear (auto: where exact, and not with bf16)",
    )
    fuse_consistency: bool = Field(
        True, description="score GN-CR's augmented real batch in the D step's one GN pass (exact: GN is per sample)"
    )
    precision: Literal["fp32", "tf32", "bf16"] = Field(
        "fp32",
        description="fp32: IEEE float32 everywhere; tf32: TF32 CUDA convolutions and matmuls; "
        "bf16: bfloat16 autocast (GN's gradient norm and division stay float32)",
    )
    channels_last: bool = Field(False, description="NHWC memory format for G, D and the images")
    cuda_graph: bool = Field(
        False,
        description="capture the D step once as a CUDA graph and replay it (CUDA, one process; "
        "the first few D steps run eagerly as warm-up)",
    )
    threads: Literal["auto"] | Annotated[int, Field(gt=0)] = Field(
        "auto",
        description="CPU threads (torch.set_num_threads): a count, or auto: one for a small model (under 1 M "
        "parameters), for a larger one the cores the load average leaves free, PyTorch's default on a GPU. "
        "OMP_NUM_THREADS in the environment is respected by auto; the count chosen is printed at start",
    )
    loggers: list[ComponentSpec] = Field(
        default_factory=lambda: [ComponentSpec(name="tensorboard")],
        description="where scalars, sample grids and evaluations also go: tensorboard, wandb, mlflow (extras: "
        "pip install 'gn-plugin[wandb]' or '[mlflow]') or a plugin's logger, each a name or {name, options} "
        "(wandb: project, entity, name, group, tags, mode; mlflow: tracking_uri, experiment, run_name); "
        "[] = only the run directory's own files. A logger that fails is named in one line and switched off; "
        "the run goes on",
    )
    log_every: int = Field(100, gt=0, description="steps between scalar logs (losses, Lipschitz probes, speed)")
    sample_every: int = Field(1000, gt=0, description="steps between sample grids")
    sample_count: int = Field(64, gt=0, description="images per generator in each sample grid")
    checkpoint_every: int = Field(1000, gt=0, description="steps between checkpoints/latest.pt")

    @field_validator("loggers")
    @classmethod
    def _loggers_registered(cls, specs: list[ComponentSpec]) -> list[ComponentSpec]:
        for spec in specs:
            _known("logger", spec.name)
            _no_fixed_arguments(spec.options, {
                "run_dir": "a logger writes into the run directory", "config": "the run's config is passed",
                "resume_step": "set when the run resumes",
            })
        return specs

    @field_validator("betas")
    @classmethod
    def _betas_in_range(cls, betas: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError("both betas must be in [0, 1)")
        return (float(betas[0]), float(betas[1]))


class EvalConfig(Strict):
    every: int = Field(5000, ge=0, description="evaluate every N generator steps; 0 = only at the end")
    num_samples: int = Field(10000, gt=1, description="generated images per evaluation")
    batch_size: int = Field(500, gt=0, description="images per batch in evaluation")
    metrics: list[str] = Field(
        default_factory=lambda: ["fid", "kid", "is"],
        description="registered metrics (fid, kid, is, precision, recall, density, coverage, class_coverage, or a "
        "plugin's), computed from one feature pass; [] = no evaluation: no feature extractor is loaded, no "
        "results.jsonl, no best.pt",
    )
    inception_path: str | None = Field(
        None,
        description="TF-Inception TorchScript file (null: the project's cache, $GN_PLUGIN_CACHE or "
        "~/.cache/gn_plugin, then clean-fid's /tmp)",
    )
    cache_dir: str | None = Field(
        None,
        description="where reference statistics are kept: clean-fid's precomputed ones and those computed from "
        "data sets (null: $GN_PLUGIN_CACHE, else ~/.cache/gn_plugin)",
    )
    best_metric: str = Field(
        "fid", description="metric that chooses checkpoints/best.pt; one of metrics (unused when metrics is [])"
    )
    best_generator: Literal["raw", "ema"] = Field(
        "ema",
        description="generator whose metric chooses best.pt (raw or ema); the authors chose by the raw G "
        "at 32 and 48 px and by the EMA G at 128 and 256 px, and so do the recipes",
    )
    generator_mode: Literal["train", "eval"] = Field(
        "train",
        description="train: sample a copy of each generator in train mode under no_grad, as the authors' release "
        "(BatchNorm uses the statistics of each batch of train.batch_size_g images, BigGAN's spectral norm runs "
        "its power iteration); eval: the generator in eval mode (BatchNorm's running statistics). "
        "Also used for sample grids; training is never changed",
    )
    mode: Literal["clean", "legacy_tensorflow", "legacy_pytorch"] = Field(
        "clean",
        description="clean-fid's pipeline for Inception metrics (FID, KID, IS from one pass): clean (PIL bicubic "
        "resize to 299, TF-Inception weights), legacy_tensorflow (the TF graph's own bilinear resize inside the "
        "TF-Inception: TTUR FID and TF IS, as in the paper), legacy_pytorch (PyTorch bilinear resize, pytorch-fid's "
        "port of the weights). Numbers of different modes do not compare. The recipes of the paper's tables use "
        "legacy_tensorflow (--set eval.mode=clean for clean-fid's own); data sets scored by the digits classifier "
        "(one pipeline) take clean only",
    )
    pytorch_inception_path: str | None = Field(
        None,
        description="eval.mode legacy_pytorch: pytorch-fid's Inception weights (pt_inception-2015-12-05-6726825d.pth; "
        "default: torch hub's checkpoints folder, downloaded there when missing)",
    )

    @field_validator("metrics")
    @classmethod
    def _metrics_registered(cls, names: list[str]) -> list[str]:
        for name in names:
            _known("metric", name)
        return names

    @model_validator(mode="after")
    def _best_metric_measured(self) -> EvalConfig:
        if self.metrics and self.best_metric not in self.metrics:
            raise ValueError(
                f"best_metric '{self.best_metric}' is not among metrics ({', '.join(self.metrics) or 'none'})"
            )
        return self


class Config(Strict):
    """The whole run: components, model, data, training and evaluation."""

    norm: ComponentSpec = Field(
        default_factory=lambda: ComponentSpec(name="gn"),
        description="how D's score is constrained: gn, gn-cr, sn, none, or a plugin's norm",
    )
    loss: ComponentSpec = Field(
        default_factory=lambda: ComponentSpec(name="hinge"),
        description="adversarial loss on the norm's scores: hinge, ns, wasserstein, ls, or a plugin's loss",
    )
    regularizers: list[ComponentSpec] = Field(
        default_factory=list, description="penalties added to the D loss (gp, cr, r1), each with its weight"
    )
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @field_validator("norm")
    @classmethod
    def _norm_registered(cls, spec: ComponentSpec) -> ComponentSpec:
        _known("norm", spec.name)
        _no_fixed_arguments(spec.options, {"discriminator": "the norm wraps the model's discriminator"})
        return spec

    @field_validator("loss")
    @classmethod
    def _loss_registered(cls, spec: ComponentSpec) -> ComponentSpec:
        _known("loss", spec.name)
        return spec

    @field_validator("regularizers")
    @classmethod
    def _regularizers_registered(cls, specs: list[ComponentSpec]) -> list[ComponentSpec]:
        for spec in specs:
            _known("regularizer", spec.name)
        return specs

    def to_dict(self) -> dict[str, Any]:
        """Plain data, components written the way a user writes them."""
        data = self.model_dump(mode="json")
        data["norm"] = self.norm.to_yaml()
        data["loss"] = self.loss.to_yaml()
        data["regularizers"] = [spec.to_yaml() for spec in self.regularizers]
        data["train"]["loggers"] = [spec.to_yaml() for spec in self.train.loggers]
        return data


# -- loading ---------------------------------------------------------------------------------------
#: Bounds on what a config file may hold; far above any real config, far below what exhausts memory.
MAX_CONFIG_BYTES = 1 << 20
MAX_CONFIG_VALUES = 100_000  # counted with YAML aliases expanded (an alias bomb is small until expanded)
MAX_CONFIG_DEPTH = 32


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (plain YAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults`, merged by the base class
                continue
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, typing.Hashable):
                continue  # the base class reports an unhashable key
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key '{key}' is given twice in one mapping", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def check_size(data: Any, source: str) -> None:
    """Refuse data with more than :data:`MAX_CONFIG_VALUES` values or deeper than :data:`MAX_CONFIG_DEPTH`."""
    count, pending = 0, [(data, 1)]
    while pending:
        value, depth = pending.pop()
        count += 1
        if count > MAX_CONFIG_VALUES:
            raise GnPluginError(f"{source}: more than {MAX_CONFIG_VALUES} values once YAML aliases are expanded")
        if depth > MAX_CONFIG_DEPTH:
            raise GnPluginError(f"{source}: nested deeper than {MAX_CONFIG_DEPTH} levels")
        if isinstance(value, dict):
            pending += [(item, depth + 1) for pair in value.items() for item in pair]
        elif isinstance(value, (list, tuple)):
            pending += [(item, depth + 1) for item in value]


def parse_yaml(text: str, source: str) -> Any:
    """YAML text read with a safe loader (no Python tags), duplicate keys refused, size bounded."""
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise GnPluginError(f"{source}: invalid YAML{where}: {_one_line(getattr(exc, 'problem', None) or exc)}") from None
    except RecursionError:
        raise GnPluginError(f"{source}: nested deeper than {MAX_CONFIG_DEPTH} levels") from None
    check_size(data, source)
    return data


def read_text(path: Path) -> str:
    """A config file's text: at most :data:`MAX_CONFIG_BYTES`, UTF-8."""
    if not path.is_file():
        raise GnPluginError(f"config file not found: {path}")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise GnPluginError(f"{path}: {path.stat().st_size} bytes is too large for a config (at most {MAX_CONFIG_BYTES})")
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise GnPluginError(f"{path}: not a UTF-8 text file (byte {exc.object[exc.start]:#04x} at offset {exc.start})") from None


def read_yaml(path: Path) -> dict[str, Any]:
    """A YAML mapping read with a safe loader; a missing, binary, empty or malformed file is a one-line error."""
    data = parse_yaml(read_text(path), str(path))
    if data is None:
        raise GnPluginError(f"{path}: the file is empty; a config sets at least one key (for example base: or norm:)")
    if not isinstance(data, dict):
        raise GnPluginError(f"{path}: a config must be a mapping, got {type(data).__name__}")
    return data


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` on top of ``base``: mappings merge key by key, everything else is replaced."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def resolve_bases(path: Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The mapping at ``path`` merged over its ``base:`` chain (relative paths; cycles rejected)."""
    path = path.resolve()
    if path in chain:
        cycle = " -> ".join(p.name for p in (*chain, path))
        raise GnPluginError(f"{path}: 'base' inheritance forms a cycle: {cycle}")
    data = read_yaml(path)
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise GnPluginError(f"{path}: 'base' must be a path to another config")
    return deep_merge(resolve_bases(path.parent / base, (*chain, path)), data)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["train.steps=100", "norm=sn"]`` -> nested mapping; values are parsed as YAML scalars."""
    result: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        parts = key.split(".")
        if not sep or not all(parts):
            raise GnPluginError(f"--set {item!r}: expected KEY=VALUE, e.g. train.steps=100")
        value = parse_yaml(raw, f"--set {item!r}") if raw else ""
        node = result
        for depth, part in enumerate(parts[:-1]):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                section = ".".join(parts[: depth + 1])
                raise GnPluginError(
                    f"--set {item!r}: an earlier --set gave {section} a value, so it has no key {parts[depth + 1]!r}"
                )
        node[parts[-1]] = value
    return result


def _apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    # `--set norm.consistency_weight=3` on `norm: gn-cr` must first turn the bare name into a mapping.
    for key in ("norm", "loss"):
        if isinstance(overrides.get(key), dict) and isinstance(data.get(key), str):
            data = {**data, key: {"name": data[key]}}
    return deep_merge(data, overrides)


def nearest_key(schema: type[BaseModel], location: tuple[Any, ...]) -> str | None:
    """The valid key of ``schema`` nearest to the unknown one at ``location`` (a validation error's), if any."""
    *parents, key = [part for part in location if isinstance(part, str)] or [""]
    for part in parents:
        field = schema.model_fields.get(part)
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return None
        schema = field.annotation
    close = difflib.get_close_matches(key, list(schema.model_fields), n=1, cutoff=0.6)
    return close[0] if close else None


def format_validation_error(error: ValidationError, source: str, schema: type[BaseModel] | None = None) -> str:
    """The first validation problem as ``source: key.path: reason`` on one line.

    With the ``schema`` that was validated, an unknown key gets the nearest valid one as a suggestion.
    """
    first = error.errors()[0]
    location = ".".join(str(part) for part in first["loc"] if part not in ("function-after",))
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown key"
        nearest = nearest_key(schema, first["loc"]) if schema is not None else None
        if nearest:
            message += f"; did you mean '{nearest}'?"
    more = len(error.errors()) - 1
    suffix = f" (and {more} more problem{'s' * (more > 1)})" if more else ""
    return f"{source}: {location or '<root>'}: {message}{suffix}"


def config_from_dict(data: dict[str, Any], source: str = "config") -> Config:
    """Validate plain data into a :class:`Config`; problems become one-line errors naming the key."""
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise GnPluginError(format_validation_error(exc, source, Config)) from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read ``path`` (following ``base:``), apply ``--set`` overrides and validate."""
    path = Path(path)
    data = _apply_overrides(resolve_bases(path), parse_overrides(overrides or []))
    return config_from_dict(data, source=str(path))


def save_config(config: Config, path: Path) -> None:
    """Write the fully resolved config (no ``base:``) atomically: enough to reproduce the run."""
    text = yaml.safe_dump(config.to_dict(), sort_keys=False).encode()
    write_atomically(path, lambda file: file.write(text))


# -- what a resumed run may change -----------------------------------------------------------------
#: Keys a resumed run may change (a key or a whole section): how long it trains, how often it logs,
#: samples, evaluates and checkpoints, how it is evaluated, how many processes read the data.
#: None of them changes what a training step computes (a thread count at most the order of floating-point
#: sums inside an operation, to rounding).
RESUMABLE_KEYS = (
    "train.steps", "train.log_every", "train.sample_every", "train.sample_count", "train.checkpoint_every",
    "train.threads", "train.loggers", "data.num_workers", "eval",
)
COMPONENT_KEYS = ("norm", "loss", "regularizers")


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict) and data and prefix.rstrip(".") not in COMPONENT_KEYS:
        return {key: value for name, inner in data.items() for key, value in _flatten(inner, f"{prefix}{name}.").items()}
    return {prefix.rstrip("."): data}


def changed_keys(old: Config, new: Config) -> list[str]:
    """Dotted keys whose values differ between two configs (``norm``, ``loss``, ``regularizers`` whole)."""
    before, after = _flatten(old.to_dict()), _flatten(new.to_dict())
    return sorted(key for key in before.keys() | after.keys() if before.get(key) != after.get(key))


def resume_conflicts(saved: Config, new: Config) -> list[str]:
    """The keys ``new`` changes relative to ``saved`` that a resumed run may not change (:data:`RESUMABLE_KEYS`)."""
    allowed = lambda key: any(key == k or key.startswith(k + ".") for k in RESUMABLE_KEYS)  # noqa: E731
    return [key for key in changed_keys(saved, new) if not allowed(key)]
