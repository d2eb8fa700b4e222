"""Finding source modules (entry point group ``module_system.modules``), destinations
(``module_system.destinations``) and validators (``module_system.validators``).

Built-in and third-party plugins are found the same way; each is imported lazily, by
name, the first time a registry uses it. A plugin that fails to import or declares an
invalid schema (a module's ``source_schema``, a destination's ``config_schema``, a
validator's ``validate_schema``) or is not a subclass of its base is
recorded with its package and the reason, and the others stay usable.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import structlog

from common.exceptions import ConfigError, PluginError
from common.interfaces.base_module import BaseModule
from common.interfaces.destination import DESTINATION_GROUP, Destination
from common.interfaces.validator import VALIDATOR_GROUP, Validator

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
    """The installed source modules (or, with ``base=Destination``, destinations), loaded on
    first use and cached."""

    def __init__(self, group: str = ENTRY_POINT_GROUP, base: type[Any] = BaseModule,
                 schema_attr: str = "source_schema", kind: str = "module") -> None:
        self._entry_points: dict[str, EntryPoint] = {ep.name: ep for ep in entry_points(group=group)}
        self._base, self._schema_attr = base, schema_attr
        self.kind = kind
        """What one plugin of the group is called in messages (``module``, ``destination``)."""
        self._loaded: dict[str, type[Any]] = {}
        self._errors: dict[str, str] = {}
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        return sorted(self._entry_points)

    def load(self, name: str) -> type[Any]:
        """The class registered as ``name``.

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
                cls = _check(name, ep.load(), self._base, self._schema_attr, trusted=_ours(ep))
            except Exception as exc:  # any import-time failure of a plugin is recorded, not fatal
                pkg = _package(ep)
                why = str(exc) if isinstance(exc, PluginError) else f"{type(exc).__name__}: {exc}"
                reason = f"{self.kind} {name!r} from {pkg} failed to load: {why}"
                self._errors[name] = reason
                log.warning("module_load_failed", kind=self.kind, module=name, package=pkg, reason=why)
                raise PluginError(reason, module=name) from exc
            self._loaded[name] = cls
            return cls

    def is_builtin(self, name: str) -> bool:
        """Registered by module_system itself."""
        ep = self._entry_points.get(name)
        return ep is not None and _ours(ep)

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


def _check(name: str, obj: object, base: type[Any], schema_attr: str, trusted: bool = False) -> type[Any]:
    """The class, if it is a ``base`` subclass with a valid schema (attribute ``schema_attr``).

    A ``trusted`` (built-in) plugin's schema is not checked against the metaschema here:
    the test suite does that for every built-in (``tests/plugins``), and skipping it keeps
    ``jsonschema`` (~50 ms of imports) out of runs that never need its messages.
    """
    if not (isinstance(obj, type) and issubclass(obj, base)):
        what = obj.__qualname__ if isinstance(obj, type) else repr(obj)
        raise PluginError(f"{what} is not a {base.__name__} subclass", module=name)
    schema = getattr(obj, schema_attr, None)
    if not isinstance(schema, dict) or schema.get("type") != "object":
        raise PluginError(f"{schema_attr} must be a JSON Schema object with type 'object'", module=name)
    if not trusted:
        import jsonschema

        try:
            jsonschema.Draft202012Validator.check_schema(schema)
        except jsonschema.SchemaError as exc:
            raise PluginError(f"invalid {schema_attr}: {exc.message}", module=name) from exc
    return obj


_default_catalog: ModuleCatalog | None = None
_default_destinations: ModuleCatalog | None = None
_default_validators: ModuleCatalog | None = None


def default_catalog() -> ModuleCatalog:
    global _default_catalog
    if _default_catalog is None:
        _default_catalog = ModuleCatalog()
    return _default_catalog


def default_destinations() -> ModuleCatalog:
    """The installed destinations (``module_system.destinations``)."""
    global _default_destinations
    if _default_destinations is None:
        _default_destinations = ModuleCatalog(DESTINATION_GROUP, Destination, "config_schema", kind="destination")
    return _default_destinations


def default_validators() -> ModuleCatalog:
    """The installed validators (``module_system.validators``)."""
    global _default_validators
    if _default_validators is None:
        _default_validators = ModuleCatalog(VALIDATOR_GROUP, Validator, "validate_schema", kind="validator")
    return _default_validators


def validator_owners(catalog: ModuleCatalog) -> dict[str, str]:
    """Which validator owns each ``validate`` key: key -> entry point name, over every validator
    that loads (loading each once; one that does not is left out, its error kept by the catalog).
    Two validators claiming one key: the first by name keeps it, and the clash is logged."""
    owners: dict[str, str] = {}
    for name in catalog.names():
        try:
            cls = catalog.load(name)
        except PluginError:
            continue
        for key in cls.validate_schema.get("properties", {}):
            if key in owners:
                log.warning("validator_key_clash", key=key, kept=owners[key], ignored=name)
                continue
            owners[key] = name
    return owners
