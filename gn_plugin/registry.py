"""Component registry: names are the public interface, entry points are the plugin mechanism.

Every component kind (norms, losses, regularizers, models, datasets, metrics) is an entry-point group.
The built-in components are declared in this project's own ``pyproject.toml`` exactly the way a
third-party package declares its own, so a plugin needs one line in its pyproject and no edit here::

    [project.entry-points."gn_plugin.norms"]
    my-norm = "my_package.norms:my_norm"

Entry points are read with :mod:`importlib.metadata`, the standard-library successor of the
``entrypoints`` package (which is in maintenance-only mode); it needs no extra dependency and is
what pip, pytest and pluggy use. Plugins are loaded lazily: listing names imports nothing, a
plugin's module is imported only when it is selected or listed in detail. A plugin that fails to
import is reported by name and does not take the other components down.
"""

from __future__ import annotations

import difflib
import inspect
import warnings
import re
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Callable, TypeVar

from gn_plugin.errors import GnPluginError, first_line

__all__ = [
    "KINDS",
    "ComponentInfo",
    "Registry",
    "create",
    "first_sentence",
    "get",
    "list_components",
    "options",
    "plain_text",
    "register",
    "registry",
]

#: component kind -> entry-point group
KINDS: dict[str, str] = {
    "norm": "gn_plugin.norms",
    "loss": "gn_plugin.losses",
    "regularizer": "gn_plugin.regularizers",
    "model": "gn_plugin.models",
    "dataset": "gn_plugin.datasets",
    "metric": "gn_plugin.metrics",
    "logger": "gn_plugin.loggers",
}

T = TypeVar("T")

#: the distribution that ships the built-in components
BUILTIN_DISTRIBUTION = "gn-plugin"


class NameClash(UserWarning):
    """A plugin claims the name of a built-in component (the built-in is used)."""


@dataclass(frozen=True)
class ComponentInfo:
    """Where a registered name comes from, without importing it."""

    kind: str
    name: str
    provider: str  # distribution name, or "in-process (module)" for decorator registrations
    target: str  # "module:attribute"


def _distribution_name(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return dist.name if dist is not None else "<unknown distribution>"


class Registry:
    """The components of one kind: in-process registrations plus an entry-point group."""

    def __init__(self, kind: str, group: str) -> None:
        self.kind = kind
        self.group = group
        self._local: dict[str, tuple[Callable[..., Any], ComponentInfo]] = {}
        self._entry_points: dict[str, list[EntryPoint]] | None = None
        self._loaded: dict[str, Callable[..., Any]] = {}
        self._clashes_reported: set[str] = set()

    # -- discovery -----------------------------------------------------------------------------
    def refresh(self) -> None:
        """Forget what was discovered so the next lookup re-reads the installed entry points."""
        self._entry_points = None
        self._loaded.clear()
        self._clashes_reported.clear()

    def _discovered(self) -> dict[str, list[EntryPoint]]:
        if self._entry_points is None:
            found: dict[str, list[EntryPoint]] = {}
            for ep in entry_points(group=self.group):
                claims = found.setdefault(ep.name, [])
                # The same distribution seen twice on sys.path is not a conflict.
                if all(_distribution_name(c) != _distribution_name(ep) for c in claims):
                    claims.append(ep)
            self._entry_points = found
        return self._entry_points

    def names(self) -> list[str]:
        """All registered names, sorted; imports no plugin."""
        return sorted(set(self._discovered()) | set(self._local))

    def info(self, name: str) -> ComponentInfo:
        """Provider and target of ``name`` without importing it."""
        if name in self._local:
            return self._local[name][1]
        ep = self._single_entry_point(name)
        return ComponentInfo(self.kind, name, _distribution_name(ep), ep.value)

    # -- lookup --------------------------------------------------------------------------------
    def _unknown(self, name: str) -> GnPluginError:
        names = self.names()
        close = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        available = ", ".join(names) if names else "none installed"
        return GnPluginError(f"unknown {self.kind} '{name}'{hint} (available: {available})")

    def _single_entry_point(self, name: str) -> EntryPoint:
        """The entry point ``name`` selects: ``name@distribution`` picks a claim; a built-in wins a clash."""
        base, _, distribution = name.partition("@")
        claims = self._discovered().get(base)
        if not claims:
            raise self._unknown(name)
        if distribution:
            chosen = [ep for ep in claims if _distribution_name(ep) == distribution]
            if not chosen:
                who = ", ".join(_distribution_name(ep) for ep in claims)
                raise GnPluginError(f"{self.kind} '{base}' is not provided by '{distribution}' (provided by: {who})")
            return chosen[0]
        if len(claims) == 1:
            return claims[0]
        builtin = [ep for ep in claims if _distribution_name(ep) == BUILTIN_DISTRIBUTION]
        others = ", ".join(f"'{_distribution_name(ep)}' ({ep.value})" for ep in claims if ep not in builtin)
        if builtin:
            if base not in self._clashes_reported:
                self._clashes_reported.add(base)
                other = next(_distribution_name(ep) for ep in claims if ep not in builtin)
                warnings.warn(
                    f"{self.kind} '{base}' is also claimed by {others}; the built-in is used "
                    f"('{base}@{other}' selects the other)", NameClash, stacklevel=3,
                )
            return builtin[0]
        raise GnPluginError(
            f"{self.kind} '{base}' is claimed by {len(claims)} distributions: {others.replace(', ', ' and ')}; "
            f"select one as '{base}@<distribution>', uninstall one or rename its entry point"
        )

    def get(self, name: str) -> Callable[..., Any]:
        """The factory registered as ``name`` (or ``name@distribution``), importing its plugin if needed."""
        if name in self._local:
            return self._local[name][0]
        if name in self._loaded:
            return self._loaded[name]
        ep = self._single_entry_point(name)
        try:
            factory = ep.load()
        except (Exception, SystemExit) as exc:  # a broken plugin, even one that exits, must not take the others down
            raise GnPluginError(
                f"{self.kind} plugin '{name}' from distribution '{_distribution_name(ep)}' "
                f"(entry point {ep.value}) failed to load: {type(exc).__name__}: {first_line(exc)}"
            ) from exc
        self._loaded[name] = factory
        return factory

    def _provider(self, name: str) -> str:
        """The distribution (or in-process module) that provides ``name``, for messages."""
        try:
            return self.info(name).provider
        except GnPluginError:
            return "unknown provider"

    def create(self, name: str, *args: Any, **options: Any) -> Any:
        """Call the factory ``name`` with ``options``; bad options and a factory that raises are one-line errors."""
        factory = self.get(name)
        try:
            signature = inspect.signature(factory)
        except ValueError:  # some builtins have no signature; let the call itself decide
            signature = None
        if signature is not None:
            check_option_names(self.kind, name, factory, signature, options)
            try:
                bound = signature.bind(*args, **options)
            except TypeError as exc:
                raise GnPluginError(f"{self.kind} '{name}': {exc}") from None
            for option, value in bound.arguments.items():
                default = signature.parameters[option].default
                if isinstance(value, bool) and isinstance(default, (int, float)) and not isinstance(default, bool):
                    raise GnPluginError(f"{self.kind} '{name}': option '{option}' expects a number, got {str(value).lower()}")
        try:
            return factory(*args, **options)
        except GnPluginError:
            raise
        except Exception as exc:  # a plugin's (or a built-in's) own failure, named by who provides it
            raise GnPluginError(
                f"{self.kind} '{name}' from '{self._provider(name)}' failed with these options: "
                f"{type(exc).__name__}: {first_line(exc)}"
            ) from exc

    def register(
        self, name: str, obj: T | None = None, *, override: bool = False
    ) -> T | Callable[[T], T]:
        """Register ``obj`` in-process as ``name``; usable as a decorator."""

        def add(target: T) -> T:
            if not override and name in self.names():
                raise GnPluginError(
                    f"{self.kind} '{name}' is already registered by {self.info(name).provider}; "
                    "pass override=True to replace it"
                )
            module = getattr(target, "__module__", "?")
            qualname = getattr(target, "__qualname__", repr(target))
            info = ComponentInfo(self.kind, name, f"in-process ({module})", f"{module}:{qualname}")
            self._local[name] = (target, info)  # type: ignore[assignment]
            return target

        return add(obj) if obj is not None else add

    def unregister(self, name: str) -> None:
        """Drop an in-process registration (entry points stay installed)."""
        self._local.pop(name, None)


def check_option_names(
    kind: str, name: str, factory: Callable[..., Any], signature: inspect.Signature, given: dict[str, Any]
) -> None:
    """A one-line error for an option the factory does not take, naming the nearest one it takes."""
    parameters = signature.parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return
    accepted = {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    settable = [option.split("=")[0].split(" ")[0] for option in options(kind, factory)]
    for option in given:
        if option not in accepted:
            close = difflib.get_close_matches(option, settable, n=1, cutoff=0.6)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise GnPluginError(
                f"{kind} '{name}': unknown option '{option}'{hint} (its options: {', '.join(settable) or 'none'})"
            )


_REGISTRIES: dict[str, Registry] = {kind: Registry(kind, group) for kind, group in KINDS.items()}

#: factory arguments the runner fills in itself (from ``model.*`` and ``data.*`` keys), not options
SUPPLIED_BY_RUNNER = {
    "model": {"z_dim", "num_classes", "width", "channels"},
    "dataset": {"root", "resolution", "split", "download"},
    "logger": {"resume_step"},
}


def first_sentence(component: Any) -> str:
    """The first sentence of ``component``'s docstring, on one line, markup kept (reStructuredText)."""
    paragraph = " ".join((inspect.getdoc(component) or "").split("\n\n")[0].split())
    return re.split(r"(?<=[.!?])\s+(?=[A-Z])", paragraph, maxsplit=1)[0]


def plain_text(rst: str) -> str:
    """Inline reStructuredText as plain text: ``literal`` -> literal, :func:`~pkg.name` -> name."""
    text = re.sub(r":\w+:`~?(?:[\w.]*\.)?([^`.]+)`", r"\1", rst)
    return text.replace("``", "")


def options(kind: str, factory: Callable[..., Any]) -> list[str]:
    """The options a config can give ``factory``, with their defaults: ``depth=3``, ``root (required)``.

    Inputs without a default that the runner passes (the discriminator of a norm, a metric's
    features) and the arguments it fills from other keys (:data:`SUPPLIED_BY_RUNNER`) are left out.
    """
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # some builtins have no signature
        return []
    supplied = SUPPLIED_BY_RUNNER.get(kind, set())
    return [
        f"{p.name} (required)" if p.default is p.empty else f"{p.name}={p.default!r}"
        for p in parameters
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in supplied
        and (p.default is not p.empty or p.kind is p.KEYWORD_ONLY)
    ]


def registry(kind: str) -> Registry:
    """The registry of one component kind: ``norm``, ``loss``, ``regularizer``, ``model``, ``dataset``, ``metric`` or ``logger``."""
    try:
        return _REGISTRIES[kind]
    except KeyError:
        raise GnPluginError(
            f"unknown component kind '{kind}' (kinds: {', '.join(KINDS)})"
        ) from None


def list_components(kind: str) -> list[str]:
    """Registered names of one kind, sorted, without importing any plugin."""
    return registry(kind).names()


def get(kind: str, name: str) -> Callable[..., Any]:
    """The factory registered under ``name``."""
    return registry(kind).get(name)


def create(kind: str, name: str, *args: Any, **options: Any) -> Any:
    """Build the component ``name`` of ``kind`` with ``options``."""
    return registry(kind).create(name, *args, **options)


def register(kind: str, name: str, *, override: bool = False) -> Callable[[T], T]:
    """Decorator registering a component in-process (tests, notebooks)."""
    return registry(kind).register(name, override=override)  # type: ignore[return-value]
