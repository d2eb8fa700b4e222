"""The configuration edge: the registry (YAML) and the batch (JSON) in, frozen objects out.

This module alone sees raw YAML/JSON, read through :mod:`common.config_loader` (UTF-8 only,
no duplicate keys, bounded depth and YAML alias expansion). It interpolates ``${VAR}`` / ``${VAR:-default}``,
validates against the shipped ``schemas/registry.schema.json`` plus each module's
``source_schema``, fills every default from those schemas, wraps ``x-secret`` strings in
:class:`~common.secret.Secret`, loads and checks JSON Schema files, and builds
:class:`~common.config_model.Registry` and :class:`~common.config_model.Batch`.

Any mistake raises :class:`~common.exceptions.ConfigError` with one line naming the
file, the service or job, and the key. Values are never quoted in errors, so a
misplaced secret cannot leak through one.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import re
from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jsonschema_rs

from common.config_loader import load_json_file, load_yaml_file
from common.config_model import (
    DEFAULT_PREFIXES,
    GENERIC_PREFIXES,
    Batch,
    CsvRules,
    DestinationSpec,
    HtmlRules,
    JobSpec,
    NotifyConfig,
    OnUnchecked,
    Registry,
    RetryConfig,
    ServiceConfig,
    TableRules,
    ValidateConfig,
    Webhook,
)
from common.exceptions import ConfigError, PluginError
from common.frozen import freeze, thaw
from common.logger import job_log_name
from common.manifest import manifest_key
from common.plugins import (
    ModuleCatalog,
    default_catalog,
    default_destinations,
    default_validators,
    validator_owners,
)
from common.secret import Secret

if TYPE_CHECKING:
    import jsonschema

__all__ = ["batch_registry", "default_on_unchecked", "load_batch", "load_registry", "merge", "plain_copy",
           "read_batch", "resolve_source"]

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")
_BATCH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["jobs"],
    "properties": {
        "description": {"type": "string", "description": "Free text for people; not used by the run."},
        "registry": {"type": "string", "minLength": 1,
                     "description": "The registry these jobs run against (relative to the batch file), used when "
                                    "`--registry` is not given; failed-jobs files record their run's registry here."},
        "jobs": {"type": "array", "minItems": 1, "items": {"type": "object"}, "description": "The jobs to run."},
    },
}
_JOB_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["job_id", "service_id"],
    "properties": {
        "job_id": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]*$", "maxLength": 200,
                   "description": "Unique within the batch; names the manifest and the job's log file."},
        "service_id": {"type": "string", "minLength": 1, "description": "A service of the registry."},
        "priority": {"type": "integer", "minimum": 1, "maximum": 10, "default": 5,
                     "description": "Higher runs first when workers are scarce; equal priorities run in file order."},
        "params": {"type": "object", "default": {},
                   "description": "Overrides of the service's source keys for this job only."},
    },
}


class _Interpolated(str):
    """A string that came (at least partly) from the environment: may be coerced to the schema's type.
    ``template`` is the registry text it was made from (a secret keeps it: :class:`~common.secret.Secret`)."""

    template: str | None = None

    @classmethod
    def of(cls, value: str, template: str | None) -> _Interpolated:
        made = cls(value)
        made.template = template
        return made


@cache
def registry_schema() -> dict[str, Any]:
    return json.loads((Path(__file__).parent / "schemas" / "registry.schema.json").read_text())


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge: mappings merge key by key, anything else in ``override`` wins."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


# --------------------------------------------------------------------------- registry


def load_registry(path: str | os.PathLike[str], catalog: ModuleCatalog | None = None,
                  document: Mapping[str, Any] | None = None) -> Registry:
    """Parse and completely validate the registry at ``path``.

    ``document``: the registry as a mapping (already parsed, e.g. built in Python); then
    ``path`` only names it in errors and relative paths (``validate.json_schema``) are
    taken from its parent. Every mistake is reported (one ConfigError gathering them, see
    :attr:`ConfigError.problems <common.exceptions.ConfigError.problems>`), not only the first.
    """
    path = Path(path)
    catalog = catalog or default_catalog()
    where = _Where(str(path))
    raw = load_yaml_file(path, "registry", {"services": "service"}) if document is None else plain_copy(document)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the registry must be a mapping with 'version' and 'services'")
    root = registry_schema()
    defaults = _interpolate(raw.get("defaults") or {}, where, "defaults")
    _prepare(defaults, root["$defs"]["defaults"], root)
    checked = {**raw, "defaults": defaults}
    if isinstance(raw.get("notify"), dict):
        checked["notify"] = _prepare(_interpolate(raw["notify"], where, "notify"), root["$defs"]["notify"], root)
    errors: list[ConfigError] = []
    try:
        _check(checked, root, root, where, "")
    except ConfigError as exc:
        if any(str(e.fields.get("key", "")).startswith("defaults") for e in exc.problems):
            raise  # every service would repeat the defaults' mistake
        errors.append(exc)
    services = {}
    listed = raw.get("services")
    for sid, body in (listed.items() if isinstance(listed, dict) else ()):
        if not isinstance(body, dict):
            continue  # reported by the check above
        try:
            services[sid] = _build_service(sid, body, defaults, path.parent, catalog, where.service(sid))
        except ConfigError as exc:
            errors.append(exc)
    if errors:
        raise ConfigError.gather(errors)
    notify = _build_notify(checked["notify"]) if "notify" in checked else None
    return Registry(path=path, services=freeze(services), notify=notify)


def plain_copy(value: Any) -> Any:
    """A deep copy of a configuration document given as Python objects: mappings as dicts,
    sequences (not strings) as lists; the edge mutates its input, never the caller's."""
    if isinstance(value, Mapping):
        return {k: plain_copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_copy(v) for v in value]
    return value


def _build_notify(raw: Any) -> NotifyConfig:
    """The ``notify`` section, interpolated, defaults filled and checked with the registry."""
    root = registry_schema()
    value = _secretize(raw, root["$defs"]["notify"], root)
    hooks = tuple(Webhook(url=hook["url"], on=hook["on"]) for hook in value["webhooks"])
    retry = RetryConfig(**value["retry"])
    return NotifyConfig(webhooks=hooks, retry=retry, timeout_s=float(value["timeout_s"]))


def _build_service(sid: str, raw: dict[str, Any], defaults: dict[str, Any], base_dir: Path,
                   catalog: ModuleCatalog, where: _Where) -> ServiceConfig:
    root = registry_schema()
    own = _interpolate(raw, where, "")
    body = merge({k: v for k, v in defaults.items() if k != "destination"},
                 {k: v for k, v in own.items() if k != "destination"})
    destination = _merged_destination(defaults.get("destination"), own.get("destination"))
    if destination is not None:
        body["destination"] = destination
    schema = {"$ref": "#/$defs/service", "$defs": root["$defs"]}
    _prepare(body, schema, root)
    _check(body, schema, root, where, "")
    module_type = body["type"]
    try:
        module_cls = catalog.load(module_type)
    except (ConfigError, PluginError) as exc:
        raise where.error("type", str(exc)) from None
    _check_supported(raw, module_cls, module_type, where)
    source = _resolve_source(body["source"], module_cls.source_schema, where, "source")
    fallback = tuple(
        _resolve_source(merge(body["source"], entry), module_cls.source_schema, where, f"fallback[{i}]")
        for i, entry in enumerate(body["fallback"])
    )
    supported = module_cls.supports
    destinations = _build_destinations(body["destination"], module_type, where)
    on_unchecked: OnUnchecked = body.get("on_unchecked", default_on_unchecked(body.get("validate", {})))
    return ServiceConfig(
        service_id=sid,
        type=module_type,
        source=source,
        fallback=fallback,
        validate=_build_validate(body.get("validate", {}), base_dir, where, on_unchecked, sid),
        on_unchecked=on_unchecked,
        destinations=destinations,
        retry=RetryConfig(**body["retry"]),
        timeout_s=float(body["timeout_s"]),
        max_connections=body.get("limits", {}).get("max_connections", module_cls.default_max_connections),
        incremental=body["incremental"] and "incremental" in supported,
        max_file_bytes=body["max_file_bytes"],
        requests_per_s=(body["rate_limit"]["requests_per_s"] if "rate_limit" in body and "rate_limit" in supported
                        else None),
        transfers=body.get("transfers", module_cls.default_transfers) if "transfers" in supported else 1,
        delay_s=body.get("limits", {}).get("delay_s", 0.0) if "delay" in supported else 0.0,
        state_key=body.get("state_key", sid),
        unpack=body["unpack"],
    )


def _merged_destination(default: Any, own: Any) -> Any:
    """The service's ``destination`` over ``defaults.destination``: a default mapping is merged
    under each of the service's destinations of the same ``type`` (``s3`` when unset), so
    ``destination: {prefix: ...}`` keeps the default bucket and a ``local`` destination does
    not inherit it."""
    if own is None:
        return default
    if not isinstance(default, Mapping):
        return own

    def over(entry: Any) -> Any:
        if isinstance(entry, Mapping) and entry.get("type", "s3") == default.get("type", "s3"):
            return merge(default, entry)
        return entry

    return [over(e) for e in own] if isinstance(own, list) else over(own)


def _build_destinations(raw: Any, module_type: str, where: _Where) -> tuple[DestinationSpec, ...]:
    """Each destination's spec: its type's class found, its keys checked against the class's
    ``config_schema`` (defaults filled, secrets wrapped); unique names; a file destination."""
    catalog = default_destinations()
    entries = raw if isinstance(raw, list) else [raw]
    if not entries:
        raise where.error("destination", "an empty list: name at least one destination")
    root = registry_schema()
    valid_prefix, rejected_prefix = DEFAULT_PREFIXES.get(module_type, GENERIC_PREFIXES)
    specs: list[DestinationSpec] = []
    for index, entry in enumerate(entries):
        key = f"destination[{index}]" if isinstance(raw, list) else "destination"
        if not isinstance(entry, Mapping):
            raise where.error(key, "must be a mapping with a 'type' and that type's keys")
        framework = {k: entry[k] for k in _DESTINATION_KEYS if k in entry}
        _prepare(framework, root["$defs"]["destination_entry"], root)
        _check(framework, root["$defs"]["destination_entry"], root, where, key)
        dtype = framework["type"]
        try:
            cls = catalog.load(dtype)
        except (ConfigError, PluginError) as exc:
            raise where.error(f"{key}.type", str(exc).replace("unknown type", "unknown destination type")) from None
        if cls.kind == "records" and ("prefix" in framework or "rejected_prefix" in framework):
            extra = "prefix" if "prefix" in framework else "rejected_prefix"
            raise where.error(f"{key}.{extra}", f"a {dtype!r} destination holds records, not files: it has no {extra}")
        config = _resolve_source({k: v for k, v in entry.items() if k not in _DESTINATION_KEYS},
                                 cls.config_schema, where, key)
        spec = DestinationSpec(
            type=dtype, name=framework.get("name") or cls.default_name or dtype, kind=cls.kind,
            prefix=framework.get("prefix", valid_prefix.replace("{type}", module_type)) if cls.kind == "files" else "",
            rejected_prefix=(framework.get("rejected_prefix", rejected_prefix.replace("{type}", module_type))
                             if cls.kind == "files" else ""),
            config=config,
        )
        if cls.kind == "files":
            for name in ("prefix", "rejected_prefix"):
                _check_template(getattr(spec, name), where, f"{key}.{name}")
                if ".." in getattr(spec, name).replace("\\", "/").split("/"):
                    raise where.error(f"{key}.{name}", "a '..' segment is not allowed: keys stay under the destination")
        if any(s.name == spec.name for s in specs):
            raise where.error(f"{key}.name", f"two destinations are named {spec.name!r}: give each its own 'name'")
        specs.append(spec)
    if not any(s.kind == "files" for s in specs):
        raise where.error("destination", "a records destination (e.g. sql) needs a file destination (s3 or local) "
                                         "beside it, in a list: rejected files and manifests land there")
    return tuple(specs)


#: Keys of a destination that are the framework's, not the destination type's.
_DESTINATION_KEYS = ("type", "name", "prefix", "rejected_prefix")


#: Service keys a module must declare in ``supports`` to be given them (``BaseModule.supports``).
_CAPABILITIES = {"incremental": "incremental", "rate_limit": "rate_limit", "transfers": "transfers",
                 "limits.delay_s": "delay"}


def _check_supported(raw: Mapping[str, Any], module_cls: type[Any], module_type: str, where: _Where) -> None:
    """A key the service sets that its module cannot honour is a mistake, not a silent no-op.

    Only the service's own keys are checked: a key under ``defaults`` applies to the services
    whose module supports it and is left out for the others.
    """
    supported = module_cls.supports
    present = {
        "incremental": bool(raw.get("incremental")),
        "rate_limit": "rate_limit" in raw,
        "transfers": "transfers" in raw,
        "limits.delay_s": bool((raw.get("limits") or {}).get("delay_s")),
    }
    for key, capability in _CAPABILITIES.items():
        if present[key] and capability not in supported:
            raise where.error(key, f"the {module_type!r} module does not support {key!r}")


def resolve_source(raw: Mapping[str, Any], schema: Mapping[str, Any], origin: str = "<source>") -> Any:
    """``raw`` source keys as a module receives them: defaults filled, checked against
    ``schema``, secrets wrapped, frozen. For plugin tests and tools; ConfigError on a mistake."""
    return _resolve_source(raw, schema, _Where(origin), "source")


def _resolve_source(raw: Mapping[str, Any], schema: Mapping[str, Any], where: _Where, key: str) -> Any:
    """Defaults filled, coerced, validated, secrets wrapped, frozen."""
    value = copy.deepcopy(dict(raw))
    _prepare(value, schema, schema)
    _check(value, schema, schema, where, key)
    return freeze(_secretize(value, schema, schema))


def default_on_unchecked(validate: Mapping[str, Any]) -> OnUnchecked:
    """``on_unchecked`` when the service does not set it: ``reject`` when its (merged) ``validate``
    section names any rule, as the service expects its files checked; ``accept`` otherwise."""
    return "reject" if validate else "accept"


def _build_validate(raw: Mapping[str, Any], base_dir: Path, where: _Where,
                    on_unchecked: OnUnchecked = "reject", service_id: str = "") -> ValidateConfig:
    schema_path = schema_doc = None
    if "json_schema" in raw:
        schema_path = (base_dir / raw["json_schema"]).resolve()
        schema_doc = _load_json_schema(schema_path, where)
    csv_rules = html_rules = None
    if "csv" in raw:
        csv = raw["csv"]
        columns, types = _table_columns(csv, where, "validate.csv")
        csv_rules = CsvRules(columns=columns, types=types, delimiter=csv["delimiter"], allow_empty=csv["allow_empty"])
    if "html" in raw:
        html = raw["html"]
        html_rules = HtmlRules(required=tuple(html["required"]), min_text_chars=html["min_text_chars"],
                               require_title=html["require_title"])
        from common.validators.html_checker import HtmlChecker

        try:
            HtmlChecker(html_rules)  # compiles the selectors: a bad one stops the run here
        except ConfigError as exc:
            key = exc.fields.get("key", "validate.html.required")
            raise where.error(key, str(exc).split(": ", 1)[-1]) from None
    typed = ValidateConfig(max_expanded_bytes=raw.get("max_expanded_mb", 1024) << 20,
                           json_schema_path=schema_path, json_schema=freeze(schema_doc) if schema_doc else None,
                           csv=csv_rules, html=html_rules, on_unchecked=on_unchecked,
                           parquet=_table_rules(raw, "parquet", base_dir, where),
                           xlsx=_table_rules(raw, "xlsx", base_dir, where),
                           min_files=(raw.get("quality") or {}).get("min_files"),
                           service_id=service_id, base_dir=base_dir)
    return dataclasses.replace(typed, validators=_validator_uses(raw, typed, where))


#: ``validate`` keys the framework reads itself (every other key belongs to a validator).
FRAMEWORK_VALIDATE_KEYS = ("max_expanded_mb",)


def _validator_uses(raw: Mapping[str, Any], typed: ValidateConfig,
                    where: _Where) -> tuple[tuple[str, Mapping[str, Any]], ...]:
    """The validators owning the keys ``raw`` sets, each with its keys (checked against its
    ``validate_schema``, defaults filled) and, for a plugin, built once here so that a value it
    refuses stops the run now (exit 2, naming the key)."""
    if not any(key not in FRAMEWORK_VALIDATE_KEYS for key in raw):
        return ()
    catalog = default_validators()
    owners = validator_owners(catalog)
    uses: dict[str, dict[str, Any]] = {}
    for key in raw:
        if key in FRAMEWORK_VALIDATE_KEYS:
            continue
        name = owners.get(key)
        if name is None:
            if key in catalog.names():  # a validator of that name failed to load: say why
                try:
                    catalog.load(key)
                except PluginError as exc:
                    raise where.error(f"validate.{key}", str(exc)) from None
            allowed = ", ".join(sorted({*FRAMEWORK_VALIDATE_KEYS, *owners}))
            raise where.error(f"validate.{key}", f"unknown key (allowed: {allowed})")
        uses.setdefault(name, {})[key] = _plain(raw[key])
    for name, keys in uses.items():
        if catalog.is_builtin(name):
            continue
        cls = catalog.load(name)
        schema = cls.validate_schema
        _prepare(keys, schema, schema)
        _check(keys, schema, schema, where, "validate")
        uses[name] = keys = _secretize(keys, schema, schema)
        from common.interfaces.validator import ValidatorSetup

        setup = ValidatorSetup(typed.service_id, typed.base_dir, typed.max_expanded_bytes, typed)
        try:
            cls(freeze(keys), setup)
        except ConfigError as exc:
            key = exc.fields.get("key") or f"validate.{next(iter(keys))}"
            raise where.error(key, str(exc).split(": ", 1)[-1] if str(exc).startswith(key) else str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - a plugin refusing its config at build: a config error
            raise where.error(f"validate.{next(iter(keys))}",
                              f"validator {name!r} refused it: {type(exc).__name__}: {exc}") from None
    return tuple((name, freeze(uses[name])) for name in sorted(uses))


def _table_columns(section: Mapping[str, Any], where: _Where,
                   key: str) -> tuple[tuple[str, ...] | None, Mapping[str, Any]]:
    """(columns, types) of a ``csv``-style section; ``types`` may only name listed columns."""
    columns = tuple(section["columns"]) if "columns" in section else None
    types = section.get("types", {})
    if columns is not None:
        unknown = [c for c in types if c not in columns]
        if unknown:
            raise where.error(f"{key}.types.{unknown[0]}", f"names a column not listed in {key}.columns")
    return columns, freeze(types)


def _table_rules(raw: Mapping[str, Any], name: str, base_dir: Path, where: _Where) -> TableRules | None:
    """``validate.parquet`` / ``validate.xlsx`` as TableRules (None when the section is absent)."""
    if name not in raw:
        return None
    section = raw[name]
    columns, types = _table_columns(section, where, f"validate.{name}")
    schema_path = schema_doc = None
    if "json_schema" in section:
        schema_path = (base_dir / section["json_schema"]).resolve()
        schema_doc = freeze(_load_json_schema(schema_path, where, f"validate.{name}.json_schema"))
    return TableRules(columns=columns, types=types, allow_empty=section["allow_empty"], sheet=section.get("sheet"),
                      json_schema_path=schema_path, json_schema=schema_doc)


def _load_json_schema(path: Path, where: _Where, key: str = "validate.json_schema") -> dict[str, Any]:
    if not path.exists():
        raise where.error(key, f"schema file {path} does not exist")
    try:
        doc = load_json_file(path, "schema file")
    except ConfigError as exc:
        raise where.error(key, f"schema file {exc}") from None
    if not isinstance(doc, dict):
        raise where.error(key, f"schema file {path} is not a JSON Schema object")
    import jsonschema  # only services with a JSON Schema need it

    cls = jsonschema.validators.validator_for(doc, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(doc)
    except jsonschema.SchemaError as exc:
        at = "/".join(str(p) for p in exc.absolute_path) or "(root)"
        raise where.error(key, f"schema file {path} is not a valid JSON Schema at {at}: {exc.message}") from None
    return doc


def _check_template(template: str, where: _Where, key: str) -> None:
    try:
        template.format(service_id="s", job_id="j", run_id="r", date="d")
    except (KeyError, IndexError, ValueError) as exc:
        raise where.error(key, f"unknown placeholder {exc}; allowed: {{service_id}} {{job_id}} {{run_id}} {{date}}") from None


# --------------------------------------------------------------------------- batch


def read_batch(path: str | os.PathLike[str], document: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The batch document at ``path`` (or ``document``, a mapping built in Python, copied;
    ``path`` then only names it), parsed and checked at its top level (not its jobs)."""
    raw = load_json_file(Path(path), "batch", {"jobs": "job"}) if document is None else plain_copy(document)
    _check(raw, _BATCH_SCHEMA, _BATCH_SCHEMA, _Where(str(path)), "")
    return raw  # type: ignore[no-any-return]


def batch_registry(path: str | os.PathLike[str], document: Mapping[str, Any]) -> Path | None:
    """The registry the batch ``document`` (read from ``path``) names, relative to its file; or None."""
    named = document.get("registry")
    return Path(path).parent / named if named else None


def load_batch(path: str | os.PathLike[str], registry: Registry, catalog: ModuleCatalog | None = None,
               document: dict[str, Any] | None = None) -> Batch:
    """Parse and completely validate the batch at ``path`` against ``registry``
    (``document``: the batch already read by :func:`read_batch`, not read again)."""
    path = Path(path)
    catalog = catalog or default_catalog()
    raw = read_batch(path) if document is None else document
    where = _Where(str(path))
    seen: dict[str, int] = {}
    jobs = []
    errors: list[ConfigError] = []
    for index, job in enumerate(raw["jobs"]):
        label = job.get("job_id") if isinstance(job.get("job_id"), str) else f"#{index + 1}"
        jw = where.job(label)
        try:
            _prepare(job, _JOB_SCHEMA, _JOB_SCHEMA)
            _check(job, _JOB_SCHEMA, _JOB_SCHEMA, jw, "")
            if job["job_id"] in seen:
                raise jw.error("job_id", f"duplicate job_id (also job #{seen[job['job_id']] + 1})")
            seen[job["job_id"]] = index
            service = registry.services.get(job["service_id"])
            if service is None:
                known = ", ".join(sorted(registry.services))
                raise jw.error("service_id", f"unknown service {job['service_id']!r}; known services: {known}")
            _check_file_names(job["job_id"], service, jw)
            jobs.append(_build_job(job, index, service, catalog, jw))
        except ConfigError as exc:
            errors.append(exc)
    if errors:
        raise ConfigError.gather(errors)
    return Batch(path=path, description=raw.get("description", ""), jobs=tuple(jobs))


#: The longest file name (one path segment) that common file systems take: ext4, XFS, APFS.
MAX_NAME_BYTES = 255


def _check_file_names(job_id: str, service: ServiceConfig, where: _Where) -> None:
    """The run names files after the job (its log file, its manifest): refuse here, at
    validation, a job_id that would make one of them longer than a file system takes."""
    names = {"log file name {job_id}_{service_id}_{module}.log": job_log_name(job_id, service.service_id, service.type),
             "manifest name {job_id}.json": manifest_key(service.service_id, job_id).rsplit("/", 1)[-1]}
    for what, name in names.items():
        size = len(name.encode("utf-8"))
        if size > MAX_NAME_BYTES:
            raise where.error("job_id", f"too long: its {what} would be {size} bytes, more than {MAX_NAME_BYTES}")


def _build_job(job: dict[str, Any], index: int, service: ServiceConfig, catalog: ModuleCatalog,
               where: _Where) -> JobSpec:
    params = job["params"]
    sources: tuple[Mapping[str, Any], ...] = (service.source, *service.fallback)
    if params:
        schema = catalog.load(service.type).source_schema
        primary = merge(_plain(service.source), params)
        sources = (
            _resolve_source(primary, schema, where, "params"),
            *(_resolve_source(merge(primary, _fallback_delta(service, i)), schema, where, "params")
              for i in range(len(service.fallback))),
        )
    return JobSpec(job_id=job["job_id"], service_id=service.service_id, priority=job["priority"],
                   index=index, params=freeze(params), sources=sources)


def _fallback_delta(service: ServiceConfig, i: int) -> dict[str, Any]:
    """The keys in which fallback ``i`` differs from the primary source (they win over params)."""
    primary, fb = service.source, service.fallback[i]
    return {k: _plain(v) for k, v in fb.items() if k not in primary or primary[k] != v}


def _plain(value: Any) -> Any:
    """Frozen config back to plain dicts/lists/strings, for re-validation after a merge."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Secret):
        return _Interpolated.of(value.reveal(), value.source) if value.source else value.reveal()
    return value


# --------------------------------------------------------------------------- helpers


class _Where:
    """Who an error is about: file, then service or job."""

    def __init__(self, file: str, kind: str | None = None, name: str | None = None) -> None:
        self.file, self.kind, self.name = file, kind, name

    def service(self, sid: str) -> _Where:
        return _Where(self.file, "service", sid)

    def job(self, job_id: str) -> _Where:
        return _Where(self.file, "job", job_id)

    def error(self, key: str, message: str) -> ConfigError:
        parts = [self.file]
        if self.kind:
            parts.append(f"{self.kind} '{self.name}'")
        if key:
            parts.append(f"key '{key}'")
        fields = {self.kind: self.name} if self.kind else {}
        return ConfigError(": ".join(parts) + f": {message}", file=self.file, key=key, **fields)


def _interpolate(value: Any, where: _Where, key: str) -> Any:
    if isinstance(value, dict):
        return {k: _interpolate(v, where, f"{key}.{k}" if key else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, where, f"{key}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, str) and "${" in value:
        def sub(match: re.Match[str]) -> str:
            found = _environment_value(match)
            if found is None:
                raise where.error(key, f"environment variable {match.group(1)} is not set")
            return found

        return _Interpolated.of(_VAR.sub(sub, value), value)
    return value


def interpolate_environment(template: str) -> str:
    """``template`` with each ``${VAR}`` / ``${VAR:-default}`` read from this process's environment
    (a secret unpickled on a Dask worker); ConfigError naming the variable when it is not set."""
    def sub(match: re.Match[str]) -> str:
        found = _environment_value(match)
        if found is None:
            raise ConfigError(f"environment variable {match.group(1)} is not set on this worker (a secret of the "
                              "registry is read from it)", key=match.group(1))
        return found

    return _VAR.sub(sub, template)


def _environment_value(match: re.Match[str]) -> str | None:
    """The value of one ``${VAR}`` / ``${VAR:-default}`` match: the variable (an empty one only when
    there is no default), else the default; None when neither is there."""
    name, default = match.group(1), match.group(2)
    env = os.environ.get(name)
    if env is not None and (env != "" or default is None):
        return env
    return default


def _resolve_ref(schema: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    while "$ref" in schema and schema["$ref"].startswith("#/$defs/"):
        target = root["$defs"][schema["$ref"][len("#/$defs/"):]]
        schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


_COERCE: dict[str, Callable[[str], Any]] = {
    "integer": int, "number": float, "boolean": lambda s: {"true": True, "false": False}[s.lower()]}


def _prepare(value: Any, schema: Mapping[str, Any], root: Mapping[str, Any]) -> Any:
    """Fill schema defaults into ``value`` (in place) and coerce interpolated scalars."""
    schema = _resolve_ref(schema, root)
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for name, sub in props.items():
            sub = _resolve_ref(sub, root)
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
        for name in list(value):
            sub = props.get(name, schema.get("additionalProperties"))
            if isinstance(sub, Mapping):
                value[name] = _prepare(value[name], sub, root)
    elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        return [_prepare(v, schema["items"], root) for v in value]
    elif isinstance(value, _Interpolated):
        if schema.get("x-secret"):
            return value  # kept with its template: the secret pickles as ${VAR}, not as its value
        wanted = schema.get("type")
        for type_name in [wanted] if isinstance(wanted, str) else wanted or []:
            if type_name in _COERCE:
                try:
                    return _COERCE[type_name](value.strip())
                except (ValueError, KeyError):
                    pass
        return str(value)
    return value


def _secretize(value: Any, schema: Mapping[str, Any], root: Mapping[str, Any]) -> Any:
    schema = _resolve_ref(schema, root)
    if schema.get("x-secret") and isinstance(value, str):
        return Secret(str(value), getattr(value, "template", None))
    if isinstance(value, dict):
        props = schema.get("properties", {})
        out = {}
        for name, item in value.items():
            sub = props.get(name, schema.get("additionalProperties"))
            out[name] = _secretize(item, sub, root) if isinstance(sub, Mapping) else item
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        return [_secretize(v, schema["items"], root) for v in value]
    return value


class _Validators:
    """The validators of one schema (with the root's ``$defs``): jsonschema-rs compiled at
    once (None if it does not take the schema), jsonschema's made on first need."""

    def __init__(self, schema: Mapping[str, Any], root: Mapping[str, Any]) -> None:
        self.schema, self.root = schema, root  # held: the cache's ids stay theirs
        self.full = schema
        if schema is not root and "$defs" not in schema and "$defs" in root:
            self.full = {**schema, "$defs": root["$defs"]}
        try:
            self.fast: Any = jsonschema_rs.Draft202012Validator(thaw(self.full), validate_formats=False,
                                                                offline=True)
        except Exception:  # noqa: BLE001 - a schema it does not take: jsonschema alone
            self.fast = None
        self._slow: Any = None

    @property
    def slow(self) -> Any:
        if self._slow is None:
            import jsonschema  # only once a value fails (or jsonschema-rs cannot judge it)

            self._slow = jsonschema.Draft202012Validator(self.full)
        return self._slow


_validators: dict[tuple[int, int], _Validators] = {}


def _validators_of(schema: Mapping[str, Any], root: Mapping[str, Any]) -> _Validators:
    """Built once per schema: a batch of 10,000 jobs checks each job against the same job schema."""
    hit = _validators.get((id(schema), id(root)))
    if hit is None or hit.schema is not schema or hit.root is not root:
        hit = _validators[(id(schema), id(root))] = _Validators(schema, root)
    return hit


def _plain_json(value: Any) -> Any:
    """``value`` with plain dicts, lists and strings, as jsonschema-rs reads them: it refuses a
    ``str`` subclass (an interpolated ``${VAR}``, a secret kept with its template)."""
    if isinstance(value, Mapping):
        return {k: _plain_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_json(v) for v in value]
    if isinstance(value, str) and type(value) is not str:
        return str.__str__(value)
    return value


def _check(instance: Any, schema: Mapping[str, Any], root: Mapping[str, Any], where: _Where, prefix: str) -> None:
    """Raise ``where.error`` for the first problem of ``instance``; jsonschema-rs decides
    validity, jsonschema finds and words the problem."""
    validators = _validators_of(schema, root)
    if validators.fast is not None:
        try:
            if validators.fast.is_valid(_plain_json(instance)):
                return
        except Exception:  # noqa: BLE001, S110 - a value it cannot read: jsonschema decides
            pass
    errors = list(validators.slow.iter_errors(instance))
    if not errors:
        return
    from jsonschema.exceptions import best_match

    found = []
    for error in sorted(errors, key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path)))):
        error = best_match([error])
        path = [str(p) for p in error.absolute_path]
        for key, message in _describe_all(error, path):
            found.append(where.error(".".join(p for p in [prefix, key] if p), message))
    raise ConfigError.gather(found)


def _describe_all(error: jsonschema.ValidationError, path: list[str]) -> list[tuple[str, str]]:
    """(key, message) for each key a schema error is about: every missing key of a
    ``required``, every unknown key of an ``additionalProperties``; else :func:`_describe`."""
    key = ".".join(path)
    if error.validator == "required" and isinstance(error.instance, dict):
        missing = [r for r in error.validator_value if r not in error.instance]
        return [((f"{key}.{name}" if key else name), "required key is missing") for name in missing]
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        extra = sorted(k for k in error.instance if k not in error.schema.get("properties", {}))
        allowed = ", ".join(sorted(error.schema.get("properties", {})))
        return [((f"{key}.{name}" if key else name), f"unknown key (allowed: {allowed})") for name in extra]
    return [_describe(error, path)]


def _describe(error: jsonschema.ValidationError, path: list[str]) -> tuple[str, str]:
    """(key, message) for a schema error, never quoting the offending value."""
    key = ".".join(path)
    v = error.validator
    if v == "required":
        missing = [r for r in error.validator_value if isinstance(error.instance, dict) and r not in error.instance]
        name = missing[0] if missing else "?"
        return (f"{key}.{name}" if key else name), "required key is missing"
    if v == "additionalProperties":
        extra = sorted(k for k in error.instance if k not in error.schema.get("properties", {}))
        name = extra[0] if extra else "?"
        allowed = ", ".join(sorted(error.schema.get("properties", {})))
        return (f"{key}.{name}" if key else name), f"unknown key (allowed: {allowed})"
    if v == "type":
        return key, f"must be of type {error.validator_value}, not {_json_type(error.instance)}"
    if v == "enum":
        return key, f"must be one of {', '.join(map(str, error.validator_value))}"
    if v == "const":
        return key, f"must be {error.validator_value!r}"
    if v in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        return key, f"must be {_BOUNDS[v]} {error.validator_value}"
    if v in ("minLength", "maxLength", "minItems", "maxItems", "minProperties", "pattern"):
        return key, f"fails {v} {error.validator_value}"
    if v == "not":
        together = _set_together(error.validator_value, error.instance)
        if together:
            return (f"{key}.{together[-1]}" if key else together[-1]), f"cannot be set with {', '.join(together[:-1])}"
    if v == "dependentRequired" and isinstance(error.instance, dict):
        for name, needs in error.validator_value.items():
            missing = [n for n in needs if name in error.instance and n not in error.instance]
            if missing:
                return (f"{key}.{missing[0]}" if key else missing[0]), f"required key is missing (with {name})"
    if v == "anyOf" and all(set(s) == {"required"} for s in error.validator_value):
        names = " or ".join(n for s in error.validator_value for n in s["required"])
        return key, f"needs one of {names}"
    if v == "propertyNames":
        return key, "has an invalid name (letters, digits, '_', '.', '-' only)"
    return key, f"fails {v}"


def _set_together(schema: Any, instance: Any) -> list[str]:
    """For a ``not`` of ``required`` groups (keys that exclude each other): the group the instance
    sets in full, in the schema's order; empty when the ``not`` says something else."""
    if not isinstance(schema, Mapping) or not isinstance(instance, Mapping):
        return []
    import jsonschema

    for group in schema.get("anyOf", [schema]):
        names = group.get("required", []) if isinstance(group, Mapping) else []
        if names and all(n in instance for n in names) and jsonschema.Draft202012Validator(group).is_valid(instance):
            return list(names)
    return []


_BOUNDS = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"
