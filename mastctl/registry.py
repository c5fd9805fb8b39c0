"""Plugin registry: backends found through entry points, imported only when used.

Four entry-point groups, one per kind::

    mastctl.detectors   mastctl.stores   mastctl.embedders   mastctl.teachers

mastctl's own backends are listed in its ``pyproject.toml`` exactly like a
third-party package's. An entry point names a class (``module:Class``). The
module must be cheap to import (heavy libraries are imported inside its
methods); the class may declare:

``requires``
    import names of optional dependencies, checked without importing them;
``extra``
    the ``mastctl[extra]`` that installs them (built-ins), or
    ``install_hint``: the line to print instead (third-party backends);
``Options``
    a pydantic model of its options, validated against the profile's
    ``backend_options.<name>`` section and keyword overrides;
``__init__(options, profile)``
    how :func:`create` builds it.

A missing dependency is one line naming what to install (exit 4), an
unknown name lists the known ones (exit 2).
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from mastctl.errors import BackendError, ConfigError, UsageError

if TYPE_CHECKING:
    from mastctl.profile import Profile

GROUPS = {
    "detector": "mastctl.detectors",
    "store": "mastctl.stores",
    "embedder": "mastctl.embedders",
    "teacher": "mastctl.teachers",
}

@dataclass(frozen=True)
class BackendInfo:
    """One registered backend, before anything of it is imported."""

    kind: str
    name: str
    target: str  # "module:attr"
    distribution: str | None  # the package that registered it

    def load(self) -> type:
        """Import the backend's module and return its class (BackendError on failure)."""
        module_name, _, attr = self.target.partition(":")
        try:
            obj: Any = importlib.import_module(module_name)
            for part in attr.split(".") if attr else ():
                obj = getattr(obj, part)
        except Exception as exc:  # a broken plugin must not break the CLI
            raise BackendError(f"{self.kind} {self.name!r} ({self.target}) failed to import: {exc}") from exc
        return obj

    def missing(self, cls: type) -> list[str]:
        """The declared requirements that are not installed."""
        return [req for req in getattr(cls, "requires", ()) if not _installed(req)]

    def install_hint(self, cls: type) -> str:
        hint = getattr(cls, "install_hint", None)
        if hint:
            return hint
        extra = getattr(cls, "extra", None)
        if extra and self.distribution == "mastctl":
            return f"pip install 'mastctl[{extra}]'"
        return f"pip install {' '.join(self.missing(cls))}"

    def status(self) -> tuple[bool, str]:
        """(available, why not) — imports only the backend's light module."""
        try:
            cls = self.load()
        except BackendError as exc:
            return False, str(exc).split(": ", 1)[-1]
        missing = self.missing(cls)
        if missing:
            return False, f"needs {', '.join(missing)}: {self.install_hint(cls)}"
        return True, ""


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


@cache
def _entries(group: str) -> tuple[BackendInfo, ...]:
    from importlib.metadata import entry_points

    kind = next(k for k, g in GROUPS.items() if g == group)
    seen: dict[str, BackendInfo] = {}
    for ep in entry_points(group=group):
        dist = ep.dist.name if ep.dist is not None else None
        info = BackendInfo(kind=kind, name=ep.name, target=ep.value, distribution=dist)
        # mastctl's own name wins; otherwise the first registration does.
        if ep.name not in seen or (dist == "mastctl" and seen[ep.name].distribution != "mastctl"):
            seen[ep.name] = info
    return tuple(sorted(seen.values(), key=lambda i: i.name))


def refresh() -> None:
    """Forget cached entry points (after installing a plugin at run time, in tests)."""
    _entries.cache_clear()


def backends(kind: str | None = None) -> list[BackendInfo]:
    """Every registered backend, optionally of one kind."""
    kinds = [kind] if kind else list(GROUPS)
    out: list[BackendInfo] = []
    for k in kinds:
        if k not in GROUPS:
            raise UsageError(f"unknown backend kind {k!r} (choose from {', '.join(GROUPS)})")
        out.extend(_entries(GROUPS[k]))
    return out


def get(kind: str, name: str) -> BackendInfo:
    """The registered backend ``name`` of ``kind``; a one-line error otherwise."""
    found = {b.name: b for b in backends(kind)}
    if name in found:
        return found[name]
    close = difflib.get_close_matches(name, list(found), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    known = ", ".join(found) or "none installed"
    raise UsageError(f"unknown {kind} {name!r} (known: {known}){hint}")


def load(kind: str, name: str) -> type:
    """The backend's class, with its optional dependencies checked."""
    info = get(kind, name)
    cls = info.load()
    missing = info.missing(cls)
    if missing:
        raise BackendError(f"{kind} {name!r} needs {', '.join(missing)}: {info.install_hint(cls)}")
    return cls


def options_for(cls: type, name: str, profile: Profile | None, overrides: dict[str, Any] | None = None) -> Any:
    """The backend's validated options: profile ``backend_options.<name>`` + overrides."""
    model = getattr(cls, "Options", None)
    merged: dict[str, Any] = {}
    if profile is not None:
        merged.update(profile.backend_options.get(name, {}))
    merged.update({k: v for k, v in (overrides or {}).items() if v is not None})
    if model is None:
        if merged:
            raise ConfigError(f"backend {name!r} takes no options, got: {', '.join(merged)}")
        return None
    from pydantic import ValidationError

    try:
        return model.model_validate(merged)
    except ValidationError as exc:
        known = ", ".join(model.model_fields)

        def problem(e) -> str:
            where = f"backend_options.{name}.{'.'.join(map(str, e['loc']))}"
            if e["type"] == "extra_forbidden" and len(e["loc"]) == 1:  # a typo, most often: say what there is
                return f"{where}: {name} has no option {e['loc'][-1]!r} (its options: {known})"
            return f"{where}: {e['msg']}"

        problems = [problem(e) for e in exc.errors()]
        raise ConfigError(problems[0], problems) from None


def create(kind: str, name: str, profile: Profile | None = None, **overrides: Any) -> Any:
    """Build the backend ``name``: import, check dependencies, validate options."""
    cls = load(kind, name)
    options = options_for(cls, name, profile, overrides)
    try:
        return cls(options=options, profile=profile)
    except (BackendError, ConfigError, UsageError):
        raise
    except ImportError as exc:
        raise BackendError(f"{kind} {name!r} could not load a dependency: {exc}") from exc


def check_profile(profile: Profile) -> list[str]:
    """What a profile names that this installation cannot run: unknown backends, embedders and stores,
    and backend_options that their backend does not take. (Missing optional libraries are not problems
    here: a profile may name a backend this machine does not install.)"""
    problems: list[str] = []
    named = [("detect.backend", "detector", profile.detect.backend), ("kb.store", "store", profile.kb.store),
             ("kb.text_embedder", "embedder", profile.kb.text_embedder),
             ("kb.image_embedder", "embedder", profile.kb.image_embedder)]
    for where, kind, name in named:
        try:
            get(kind, name)
        except UsageError as exc:
            problems.append(f"{where}: {exc}")
    every = {b.name: b for k in GROUPS for b in backends(k)}
    for name, options in profile.backend_options.items():
        info = every.get(name)
        if info is None:
            close = difflib.get_close_matches(name, list(every), n=1)
            problems.append(f"backend_options.{name}: no backend of that name" + (f"; did you mean {close[0]!r}?" if close else ""))
            continue
        try:
            cls = info.load()
        except BackendError:
            continue  # cannot be imported here: its options cannot be checked here either
        try:
            options_for(cls, name, profile)
        except ConfigError as exc:
            problems.extend(exc.details or [str(exc)])
    return problems
