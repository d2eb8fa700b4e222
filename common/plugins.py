"""Finding source modules through the ``module_system.modules`` entry point group.

Built-in and third-party modules are found the same way; each is imported lazily, by
name, the first time a registry uses it. A module that fails to import or declares an
invalid ``source_schema`` is recorded with its package and the reason, and the other
modules stay usable.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points

import structlog

from common.exceptions import ConfigError, PluginError
from common.interfaces.base_module import BaseModule

ENTRY_POINT_GROUP = "module_system.modules"
log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ModuleInfo:
    """One entry point of the group, loaded or not."""

    name: str
    target: str
    package: str
    version: str
    error: str | None = None


class ModuleCatalog:
    """The installed source modules, loaded on first use and cached."""

    def __init__(self, group: str = ENTRY_POINT_GROUP) -> None:
        self._entry_points: dict[str, EntryPoint] = {ep.name: ep for ep in entry_points(group=group)}
        self._loaded: dict[str, type[BaseModule]] = {}
        self._errors: dict[str, str] = {}
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        return sorted(self._entry_points)

    def load(self, name: str) -> type[BaseModule]:
        """The module class registered as ``name``.

        Raises ConfigError for an unknown name (listing the known ones) and PluginError
        for one that does not load or is malformed.
        """
        with self._lock:
            if name in self._loaded:
                return self._loaded[name]
            if name in self._errors:
                raise PluginError(self._errors[name], module=name)
            ep = self._entry_points.get(name)
            if ep is None:
                raise ConfigError(f"unknown type {name!r}; known types: {', '.join(self.names()) or 'none'}")
            try:
                cls = _check(name, ep.load(), trusted=_ours(ep))
            except Exception as exc:  # any import-time failure of a plugin is recorded, not fatal
                pkg = _package(ep)
                reason = f"module {name!r} from {pkg} failed to load: {type(exc).__name__}: {exc}"
                self._errors[name] = reason
                log.warning("module_load_failed", module=name, package=pkg, reason=str(exc))
                raise PluginError(reason, module=name) from exc
            self._loaded[name] = cls
            return cls

    def describe(self) -> list[ModuleInfo]:
        """Every registered module with its origin package and version, loading each."""
        infos = []
        for name in self.names():
            ep = self._entry_points[name]
            error = None
            try:
                self.load(name)
            except PluginError as exc:
                error = str(exc)
            dist = ep.dist
            infos.append(ModuleInfo(
                name=name, target=ep.value,
                package=dist.metadata["Name"] if dist else "unknown",
                version=dist.version if dist else "unknown", error=error,
            ))
        return infos


def _package(ep: EntryPoint) -> str:
    return f"{ep.dist.metadata['Name']} {ep.dist.version}" if ep.dist else "an unknown package"


def _ours(ep: EntryPoint) -> bool:
    """Registered by module_system itself (the built-in modules)."""
    return ep.dist is not None and ep.dist.name == "module_system"


def _check(name: str, obj: object, trusted: bool = False) -> type[BaseModule]:
    """The class, if it is a BaseModule with a valid ``source_schema``.

    A ``trusted`` (built-in) module's schema is not checked against the metaschema here:
    the test suite does that for every built-in (``tests/plugins``), and skipping it keeps
    ``jsonschema`` (~50 ms of imports) out of runs that never need its messages.
    """
    if not (isinstance(obj, type) and issubclass(obj, BaseModule)):
        raise PluginError(f"{obj!r} is not a BaseModule subclass", module=name)
    schema = getattr(obj, "source_schema", None)
    if not isinstance(schema, dict) or schema.get("type") != "object":
        raise PluginError("source_schema must be a JSON Schema object with type 'object'", module=name)
    if not trusted:
        import jsonschema

        try:
            jsonschema.Draft202012Validator.check_schema(schema)
        except jsonschema.SchemaError as exc:
            raise PluginError(f"invalid source_schema: {exc.message}", module=name) from exc
    return obj


_default_catalog: ModuleCatalog | None = None


def default_catalog() -> ModuleCatalog:
    global _default_catalog
    if _default_catalog is None:
        _default_catalog = ModuleCatalog()
    return _default_catalog
