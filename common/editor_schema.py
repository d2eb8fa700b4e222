"""One JSON Schema (draft 2020-12) of the registry, or of the batch, for editors: ``module-system schema``.

The registry schema is the shipped ``common/schemas/registry.schema.json`` with every installed
plugin's keys woven in: for each source module ``if type == X then source: <X's source_schema>``
(and each ``fallback`` entry: X's keys, none required), for each destination ``if type == X
then <X's config_schema>`` plus the framework's ``name``/``prefix``/``rejected_prefix``, and
every validator's keys under ``validate`` (its ``validate_schema``). So
VS Code (through yaml-language-server), IntelliJ and others autocomplete and check a registry:

    module-system schema > registry.schema.json
    # first line of project_registry.yaml:
    # yaml-language-server: $schema=./registry.schema.json

It describes the file as written, so it is looser than the run's check on what a file may
leave to other places: a service's ``destination`` may come from ``defaults``, so no
destination key is required here; a value may be a ``${VAR}`` reference wherever a number, a
boolean or a constrained string goes (the run checks it once interpolated). Checks that are not
JSON Schema (a JSON Schema file that exists, CSS selectors, prefix placeholders) are the run's
and ``module-system validate``'s alone.

``$id``: :data:`REGISTRY_SCHEMA_ID` and :data:`BATCH_SCHEMA_ID`. They name the schema (and
its version of this package); they are identifiers, not download locations: point editors at
the file ``module-system schema`` writes, which holds the plugins installed where it ran.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from common.exceptions import ConfigError, PluginError
from common.job_config import _BATCH_SCHEMA, _JOB_SCHEMA, registry_schema
from common.plugins import (
    ModuleCatalog,
    default_catalog,
    default_destinations,
    default_validators,
)

__all__ = ["BATCH_SCHEMA_ID", "DRAFT", "REGISTRY_SCHEMA_ID", "SCHEMA_BASE", "batch_editor_schema",
           "registry_editor_schema"]

DRAFT = "https://json-schema.org/draft/2020-12/schema"
#: Where the schemas' ``$id`` live (the project's name space; see the module docstring).
SCHEMA_BASE = "https://module-system.dev/schema/"
REGISTRY_SCHEMA_ID = SCHEMA_BASE + "registry.json"
BATCH_SCHEMA_ID = SCHEMA_BASE + "batch.json"
#: A string holding a ``${VAR}`` / ``${VAR:-default}`` reference, taken wherever a typed value goes.
INTERPOLATED: dict[str, Any] = {"type": "string", "pattern": r"\$\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\}",
                                "description": "An environment variable reference, checked once interpolated."}
#: The framework's keys of a destination entry (the rest are the type's own).
_FRAMEWORK_KEYS = ("type", "name", "prefix", "rejected_prefix")
_DEFAULT_DESTINATION = "s3"


def registry_editor_schema(sources: ModuleCatalog | None = None, destinations: ModuleCatalog | None = None,
                           validators: ModuleCatalog | None = None) -> dict[str, Any]:
    """The registry schema with every loadable plugin of ``sources``, ``destinations`` and
    ``validators`` (default: the installed ones). A plugin that does not load is left out."""
    sources = sources or default_catalog()
    destinations = destinations or default_destinations()
    validators = validators or default_validators()
    root = copy.deepcopy(registry_schema())
    root["$schema"], root["$id"] = DRAFT, REGISTRY_SCHEMA_ID
    root["title"] = "module_system project registry (with the installed plugins)"
    defs = root["$defs"]
    source_types = _loaded(sources)
    destination_types = _loaded(destinations)

    service = defs["service"]
    service["required"] = ["type", "source"]  # destination may come from defaults.destination
    service["properties"]["type"] = {**service["properties"]["type"], "enum": sorted(source_types)}
    branches = []
    for name, cls in sorted(source_types.items()):
        own = _resource(cls.source_schema, f"{SCHEMA_BASE}source/{name}.json")
        defs[f"source_{name}"] = own
        defs[f"fallback_{name}"] = {**_resource(_optional(cls.source_schema), f"{SCHEMA_BASE}fallback/{name}.json")}
        branches.append({"if": {"properties": {"type": {"const": name}}, "required": ["type"]},
                         "then": {"properties": {"source": {"$ref": f"#/$defs/source_{name}"},
                                                 "fallback": {"items": {"$ref": f"#/$defs/fallback_{name}"}}}}})
    service["allOf"] = branches
    root["properties"]["services"]["additionalProperties"] = {"$ref": "#/$defs/service"}

    framework = {k: v for k, v in defs["destination_entry"]["properties"].items()}
    framework["type"] = {**framework["type"], "enum": sorted(destination_types)}
    entry_branches = []
    for name, cls in sorted(destination_types.items()):
        own = _optional(cls.config_schema)
        keys = _FRAMEWORK_KEYS if cls.kind == "files" else ("type", "name")
        own["properties"] = {**{k: framework[k] for k in keys}, **own.get("properties", {})}
        own["additionalProperties"] = False
        defs[f"destination_{name}"] = _resource(own, f"{SCHEMA_BASE}destination/{name}.json")
        condition: dict[str, Any] = {"properties": {"type": {"const": name}}}
        if name != _DEFAULT_DESTINATION:
            condition["required"] = ["type"]
        entry_branches.append({"if": condition, "then": {"$ref": f"#/$defs/destination_{name}"}})
    defs["destination_entry"] = {"type": "object", "description": defs["destination_entry"]["description"],
                                 "properties": {"type": framework["type"]}, "allOf": entry_branches}
    defs["destination"] = {
        "description": defs["destination"]["description"],
        "anyOf": [{"$ref": "#/$defs/destination_entry"},
                  {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/destination_entry"}}],
    }
    validate = defs["validate"]
    for _name, cls in sorted(_loaded(validators).items()):
        for key, sub in cls.validate_schema.get("properties", {}).items():
            validate.setdefault("properties", {}).setdefault(key, copy.deepcopy(sub))
    validate["additionalProperties"] = False  # every key is some installed validator's
    return _interpolable(root)


def batch_editor_schema() -> dict[str, Any]:
    """The batch file's schema (jobs' ``params`` are checked by the run, against their service's module)."""
    root = copy.deepcopy(_BATCH_SCHEMA)
    root = {"$schema": DRAFT, "$id": BATCH_SCHEMA_ID, "title": "module_system batch", **root}
    root["properties"]["jobs"] = {**root["properties"]["jobs"], "items": copy.deepcopy(_JOB_SCHEMA)}
    return root


def _loaded(catalog: ModuleCatalog) -> dict[str, Any]:
    found = {}
    for name in catalog.names():
        try:
            found[name] = catalog.load(name)
        except (PluginError, ConfigError):
            continue  # `module-system modules` shows why
    return found


def _resource(schema: Mapping[str, Any], schema_id: str) -> dict[str, Any]:
    """A plugin's schema embedded as its own resource (its ``$id``), so that its own
    ``#/$defs/...`` references still resolve inside it."""
    out = copy.deepcopy(dict(schema))
    out.pop("$schema", None)
    out["$id"] = schema_id
    return out


def _optional(schema: Mapping[str, Any]) -> dict[str, Any]:
    """``schema`` with no key required at its top level (the keys may come from elsewhere)."""
    out = copy.deepcopy(dict(schema))
    out.pop("required", None)
    return out


_SCALARS = {"integer", "number", "boolean"}
_CONSTRAINTS = ("enum", "const", "pattern", "format", "minLength", "maxLength", "minimum", "maximum",
                "exclusiveMinimum", "exclusiveMaximum")


def _interpolable(schema: Any) -> Any:
    """Every typed scalar (a number, a boolean, a constrained string) also takes a ``${VAR}`` string."""
    if isinstance(schema, list):
        return [_interpolable(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in ("properties", "$defs", "patternProperties"):
            out[key] = {name: _interpolable(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "then", "else", "not", "contains"):
            out[key] = _interpolable(value)
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [_interpolable(s) for s in value]
        else:
            out[key] = value
    declared = out.get("type")
    kinds: set[str] = set(declared) if isinstance(declared, list) else {declared} if declared else set()
    scalar = bool(kinds & _SCALARS) or (kinds == {"string"} and any(c in out for c in _CONSTRAINTS)) or \
        (not kinds and ("enum" in out or "const" in out))
    if not scalar:
        return out
    kept = {k: out.pop(k) for k in ("description", "default", "title", "x-secret", "examples") if k in out}
    return {**kept, "anyOf": [out, INTERPOLATED]}
