"""Generates ``docs/CONFIGURATION.md`` from the schemas the configuration edge validates against.

    python -m common.config_docs            # print the page
    python -m common.config_docs --write    # write docs/CONFIGURATION.md
    python -m common.config_docs --check    # exit 1 when docs/CONFIGURATION.md is out of date

What is generated, and from where:

* the registry keys: ``common/schemas/registry.schema.json`` (:func:`common.job_config.registry_schema`);
* each built-in source module's ``source`` keys: its ``source_schema``, found through
  :func:`common.plugins.default_catalog`; a module that does not load is listed as
  unavailable with the reason. Modules of other packages are left out so that the page
  does not depend on which plugins happen to be installed (``module-system modules``
  lists those);
* the default destination prefixes: :data:`common.config_model.DEFAULT_PREFIXES`;
* each built-in destination's keys: its ``config_schema``, found through
  :func:`common.plugins.default_destinations`;
* the batch keys: ``_BATCH_SCHEMA`` and ``_JOB_SCHEMA`` of :mod:`common.job_config`.

The prose between the tables (interpolation, merging, secrets) is written here by hand
and must follow :mod:`common.job_config`. ``tests/docs/test_config_docs.py`` keeps the
page equal to :func:`render`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import click

from common.config_model import DEFAULT_PREFIXES, GENERIC_PREFIXES
from common.job_config import _BATCH_SCHEMA, _JOB_SCHEMA, registry_schema
from common.plugins import ModuleInfo, default_catalog, default_destinations
from common.problems import MAX_PROBLEMS_PER_FILE

__all__ = ["DOC_PATH", "main", "render", "schema_rows"]

#: The generated page, relative to the project root.
DOC_PATH = Path(__file__).resolve().parent.parent / "docs" / "CONFIGURATION.md"
#: Distribution whose modules are documented here (the built-ins).
BUILTIN_PACKAGE = "module_system"

class _Catalog(Protocol):
    def describe(self) -> list[ModuleInfo]: ...

    def load(self, name: str) -> Any: ...


# --------------------------------------------------------------------------- tables


def _resolve(schema: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    """``schema`` with a local ``$ref`` replaced by its target (sibling keys win)."""
    while isinstance(schema.get("$ref"), str) and schema["$ref"].startswith("#/$defs/"):
        target = root["$defs"][schema["$ref"][len("#/$defs/"):]]
        schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def schema_rows(schema: Mapping[str, Any], root: Mapping[str, Any] | None = None,
                prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(key, type, default, description) for every property, nested objects flattened."""
    root = root if root is not None else schema
    schema = _resolve(schema, root)
    required = set(schema.get("required", ()))
    rows: list[tuple[str, str, str, str]] = []
    for name, sub in schema.get("properties", {}).items():
        sub = _resolve(sub, root)
        key = prefix + name
        if "default" in sub:
            default = _code(_json(sub["default"]))
        elif name in required:
            default = "**required**"
        else:
            default = ""
        rows.append((key, _type_text(sub, root), default, sub.get("description", "")))
        if "properties" in sub:
            rows.extend(schema_rows(sub, root, key + "."))
        items = sub.get("items")
        if isinstance(items, Mapping) and "properties" in _resolve(items, root):
            rows.extend(schema_rows(items, root, key + "[]."))
    return rows


def _type_text(schema: Mapping[str, Any], root: Mapping[str, Any]) -> str:
    schema = _resolve(schema, root)
    if "const" in schema:
        text = _code(_json(schema["const"]))
    elif "enum" in schema:
        text = "one of " + ", ".join(_code(str(v)) for v in schema["enum"])
    else:
        kinds = schema.get("type", "any")
        text = " or ".join(_kind_text(k, schema, root) for k in (kinds if isinstance(kinds, list) else [kinds]))
    limits = _limits(schema)
    if limits:
        text += ", " + ", ".join(limits)
    if schema.get("x-secret"):
        text += ", **secret**"
    return text


def _kind_text(kind: str, schema: Mapping[str, Any], root: Mapping[str, Any]) -> str:
    items = schema.get("items")
    if kind == "array" and isinstance(items, Mapping):
        inner = _type_text(items, root)
        return f"array of {inner}" if "," not in inner else f"array of ({inner})"
    extra = schema.get("additionalProperties")
    if kind == "object" and isinstance(extra, Mapping) and extra and "properties" not in schema:
        inner = _type_text(extra, root)
        return f"object, each value {inner}" if "," not in inner else f"object, each value ({inner})"
    return kind


def _limits(schema: Mapping[str, Any]) -> list[str]:
    out = []
    for key, sign in (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="), ("exclusiveMaximum", "<")):
        if key in schema:
            out.append(f"{sign} {_json(schema[key])}")
    lo, hi = schema.get("minLength"), schema.get("maxLength")
    if lo and hi:
        out.append(f"exactly {lo} character{'s' if lo != 1 else ''}" if lo == hi else f"{lo} to {hi} characters")
    elif lo:
        out.append("non-empty" if lo == 1 else f"at least {lo} characters")
    elif hi:
        out.append(f"at most {hi} characters")
    if schema.get("minItems"):
        out.append(f"at least {schema['minItems']} item{'s' if schema['minItems'] != 1 else ''}")
    if schema.get("maxItems"):
        out.append(f"at most {schema['maxItems']} items")
    if schema.get("minProperties"):
        out.append(f"at least {schema['minProperties']} entr{'y' if schema['minProperties'] == 1 else 'ies'}")
    if "pattern" in schema:
        out.append(f"matching {_code(schema['pattern'])}")
    names = schema.get("propertyNames")
    if isinstance(names, Mapping) and "pattern" in names:
        out.append(f"names matching {_code(names['pattern'])}")
    return out


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


_CODE_SPAN = re.compile(r"(`+)(.+?)(?<!`)\1(?!`)")


def _code(text: str) -> str:
    """``text`` as a Markdown code span, fenced so that backticks inside it survive."""
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def _cell(text: str) -> str:
    """One table cell: one line, pipes escaped, ``<``/``>`` escaped outside code spans."""
    text = " ".join(str(text).split())
    out, pos = [], 0
    for match in _CODE_SPAN.finditer(text):
        out += [_escape_html(text[pos:match.start()]), match.group(0)]
        pos = match.end()
    out.append(_escape_html(text[pos:]))
    return "".join(out).replace("|", "\\|")


def _escape_html(text: str) -> str:
    return text.replace("<", "&lt;").replace(">", "&gt;")


def _table(rows: Iterable[Sequence[str]], header: Sequence[str] = ("key", "type", "default", "description"),
           code_first: bool = True) -> str:
    """A Markdown table; the first column is set as code unless ``code_first`` is false."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in rows:
        cells = [_code(c) if i == 0 and code_first else _cell(c) for i, c in enumerate(row)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _schema_notes(schema: Mapping[str, Any]) -> list[str]:
    """Rules of an object schema a key table does not show."""
    notes = []
    if schema.get("required"):
        notes.append("Required: " + ", ".join(f"`{k}`" for k in schema["required"]) + ".")
    for key, needs in schema.get("dependentRequired", {}).items():
        notes.append(f"`{key}` needs " + ", ".join(f"`{k}`" for k in needs) + ".")
    excluded = schema.get("not", {})
    for group in excluded.get("anyOf", [excluded]) if isinstance(excluded, Mapping) else []:
        names = group.get("required", []) if isinstance(group, Mapping) else []
        if len(names) > 1:
            condition = " (when true)" if any(isinstance(v, Mapping) and v.get("const") is True
                                             for v in group.get("properties", {}).values()) else ""
            notes.append(" and ".join(f"`{k}`" for k in names) + f" cannot be set together{condition}.")
    if schema.get("additionalProperties") is False:
        notes.append("Any other key is an error.")
    return notes


# --------------------------------------------------------------------------- page


_INTRO = """\
# Configuration

<!-- GENERATED by `python -m common.config_docs --write` from the schemas; do not edit by hand. -->

Two files drive a run: the **registry** (YAML, `project_registry.yaml` by default,
or `--registry FILE`, or `$MODULE_SYSTEM_REGISTRY`) declares the services; the **batch**
(JSON, `--batch-file FILE`) lists the jobs to run against them. Both are read once and
validated completely by `common/job_config.py` before any job starts
(`module-system validate` does only that). Any mistake stops the run with exit code 2
and one line per mistake naming the file, the service or job, and the key (every mistake
of the file, up to 20; past that, how many more); values are never quoted in
these messages.

Both files must be UTF-8. A key written twice in one mapping (YAML) or object (JSON) is an
error, as is nesting deeper than 64 levels; YAML anchors, aliases and merge keys
(`<<: *name`) work, but the nodes aliases bring in (counted as expanded) may not exceed
100,000 or ten times the nodes written in the file, whichever is larger, so a small file
cannot expand into a huge one (`common/config_loader.py`).

The key tables below are generated from the JSON Schemas the code validates against:
`common/schemas/registry.schema.json`, each source module's `source_schema`, and the
batch schemas in `common/job_config.py`. Regenerate this page with
`python -m common.config_docs --write`. For editors, `module-system schema` prints the
registry's JSON Schema with the installed plugins' keys (see the README, "Editor support").

## Environment variables: `${NAME}` and `${NAME:-default}`

Any string in the registry's `defaults`, `services` and `notify` may contain `${NAME}` or
`${NAME:-default}`, anywhere in the string and as often as needed:

- `${NAME}` is replaced by the environment variable `NAME`. If `NAME` is not set, the
  run does not start: the error names the service and key and says which variable is
  missing. A variable set to the empty string gives the empty string.
- `${NAME:-default}` uses `default` when `NAME` is unset **or empty**.
- In `defaults` and in a service (including its `fallback` entries), a string that came from
  interpolation is converted to the type the schema asks for: `integer` (`int()`),
  `number` (`float()`) or `boolean` (`true`/`false`, any case). So
  `port: ${FTP_PORT:-2121}` is the integer 2121. A literal string such as `"2121"`
  written in the YAML is not converted and fails a type check.
- Keys are not interpolated, nor is the batch file.

## Merging order

For each service, from lowest to highest precedence:

1. **Schema defaults**: every key with a default in the registry schema or in the
   module's `source_schema` (tables below) is filled in where still missing.
2. **`defaults`**: merged under the service. The merge is deep: mappings merge key by
   key (a service's `destination: {prefix: ...}` keeps the `bucket` from `defaults`);
   lists and scalars from the service replace those of `defaults`. A `defaults.destination`
   mapping is merged under each of the service's destinations of the same `type` (`s3` when
   unset), also inside a list, and under no other: a `local` or `sql` destination does not
   inherit the default bucket.
3. **The service's own keys.** Required keys may come from `defaults` (typically
   `destination.bucket`): the schema check runs on the merged service.
4. **`fallback` entries**: each entry is deep-merged over the service's `source`,
   giving a complete alternative source that is checked against the module's schema
   on its own. Entries are tried in order when the primary source fails.
5. **Job `params`** (batch file): deep-merged over the service's `source` for that job
   only, and checked again against the module's schema (errors name the key `params`).
   For the job's fallback sources, the keys in which a fallback differs from the
   primary source are applied over the `params`: a fallback's own differing values win,
   and `params` override everything else, including keys a fallback entry repeats with
   the primary's value.

## Secrets

String keys marked **secret** below (the schema's `"x-secret": true`: passwords,
access keys, tokens) are held as `common.secret.Secret`, whose `str()` and `repr()` are
`'***'`; only the code that hands them to a client library reveals them. Every secret
value loaded is also remembered, and the logging processor replaces it with `***` in any
log record, as do one-line job errors. Schema errors name the key, never its value, and
manifests leave secret keys out of the source they record. Secrets should come from the
environment (`password: ${FTP_PASSWORD}`). Values given in a job's `params` are copied
as they are into the failed-jobs file, exactly as they stood in the batch file.
"""


def render(catalog: _Catalog | None = None, destinations: _Catalog | None = None) -> str:
    """The whole of ``docs/CONFIGURATION.md``."""
    catalog = catalog or default_catalog()
    destinations = destinations or default_destinations()
    root = registry_schema()
    defs = root["$defs"]
    parts = [_INTRO]

    parts.append("## The registry\n\nTop level:\n\n" + _table(schema_rows(root)))
    parts.append("\n".join(_schema_notes(root)))

    service = _resolve(defs["service"], root)
    parts.append(
        "### A service (`services.<id>`)\n\n"
        "Keys of each entry under `services`. `source` is module-specific: see\n"
        "[Source modules](#source-modules).\n\n" + _table(schema_rows(service, root))
    )
    parts.append("\n".join(_schema_notes(service)))

    default_keys = ", ".join(f"`{k}`" for k in _resolve(defs["defaults"], root)["properties"])
    parts.append(
        "### `defaults`\n\n"
        f"May hold {default_keys}, with the same keys, types and meaning as on a service; "
        "they are merged under every service (see [Merging order](#merging-order))."
    )

    parts.append(_prefixes_section())
    parts.append(_destinations_section(destinations, root))
    parts.append(_validation_section())
    parts.append(_modules_section(catalog))
    parts.append(_batch_section())
    return "\n\n".join(p.rstrip("\n") for p in parts if p) + "\n"


def _prefixes_section() -> str:
    rows = [(f"`{t}`", f"`{valid}`", f"`{rejected}`") for t, (valid, rejected) in sorted(DEFAULT_PREFIXES.items())]
    rows.append(("any other", f"`{GENERIC_PREFIXES[0]}`", f"`{GENERIC_PREFIXES[1]}`"))
    table = _table(rows, ("type", "valid files (`destination.prefix`)", "rejected files (`destination.rejected_prefix`)"),
                   code_first=False)
    return (
        "### Destination prefixes\n\n"
        "Defaults of `destination.prefix` and `destination.rejected_prefix` per module type\n"
        "(`{type}` is the registry type):\n\n" + table + "\n\n"
        "In both, `{service_id}`, `{job_id}`, `{run_id}` and `{date}` (the run's start date, UTC,\n"
        "`YYYY-MM-DD`) are substituted; any other `{placeholder}` is a configuration error. A\n"
        "leading `/` is dropped and a non-empty prefix gets a trailing `/`. A file lands at the prefix plus its\n"
        "source-relative name; a rejected file lands beside `<name>.errors.json`. Each job\n"
        "also writes `_manifests/{service_id}/{job_id}.json` in the destination bucket."
    )


def _destinations_section(catalog: _Catalog, root: Mapping[str, Any]) -> str:
    entry = _resolve(root["$defs"]["destination_entry"], root)
    parts = [
        "### Destinations (`destination`)\n\n"
        "`destination` is one mapping, or a list of them (fan-out: a file counts as landed when\n"
        "every destination holds it; the manifest then says, per file, what each destination did, and\n"
        "a re-run completes only what one of them missed). Keys every destination takes:\n\n"
        + _table(schema_rows(entry, root)) + "\n\n"
        "File destinations (`s3`, `local`) hold the files, the rejected files with their errors and the\n"
        "manifests; record destinations (`sql`) hold the rows of valid files and need a file\n"
        "destination beside them. The other keys are the type's own:"
    ]
    parts += _plugin_sections(catalog, "#### `destination.type: {name}`", "config_schema", "destinations")
    return "\n\n".join(p for p in parts if p)


def _validation_section() -> str:
    html_ready = importlib.util.find_spec("common.validators.html_checker") is not None
    html = ("`validate.html`: CSS selectors, visible text length, title" if html_ready else
            "`validate.html` is accepted by the schema, but its checker "
            "(`common/validators/html_checker.py`) is not present: jobs of a service that "
            "sets it fail")
    rows = [
        ("`.json`", "the whole document against `validate.json_schema`"),
        ("`.jsonl`, `.ndjson`", "each line (newline-delimited JSON) against `validate.json_schema`"),
        ("`.csv`", "`validate.csv`: header, field count, cell types"),
        ("`.parquet`", ("`validate.parquet`: column names and types from the file's schema, string cells by the "
                        "CSV type tests, nulls, each row against `validate.parquet.json_schema`; read in row batches "
                        "with pyarrow")),
        ("`.xlsx`", ("`validate.xlsx`: the header row and each row's cells of one sheet (`sheet`, default the "
                     "first), like CSV; read with openpyxl in read-only mode")),
        ("`.html`, `.htm`", html),
        ("`.gz`, `.bz2`, `.xz`", ("what the file holds, by the suffix before (`a.csv.gz`: the `.csv` rules), "
                                  "decompressed as it streams; past `validate.max_expanded_mb` (or corrupt) it is "
                                  "rejected")),
        ("`.zip`, `.tar`, `.tar.gz`/`.tgz`, `.tar.bz2`, `.tar.xz`",
         ("each member by the rules of its own suffix, one member at a time, all members together within "
          "`validate.max_expanded_mb`; a member's problems are located `a.zip!data/x.csv row 3, column 'amount'`; "
          "members with unsafe names (`../x`, `/x`), links and special files are problems, never written")),
    ]
    lines = ["| file suffix | check |", "|---|---|"] + [f"| {a} | {b} |" for a, b in rows]
    return (
        "### Validation (`validate`)\n\n"
        "Each key of `validate` (but `max_expanded_mb`) belongs to a validator, entry point group\n"
        "`module_system.validators` (docs/PLUGINS.md, section 10): a service uses the validators whose\n"
        "keys it sets, and an installed plugin's keys are accepted and checked against its schema.\n"
        "The data-quality rules of `validate.quality` check the rows of `.csv`, `.json`, `.jsonl`/`.ndjson`,\n"
        "`.parquet` and `.xlsx` files beside the format's own rules (a duplicate is told by a 16-byte hash\n"
        "of the value, rows are never kept); `min_files` fails a job whose valid files (uploaded or\n"
        "already there) are fewer. The built-in validators check by suffix (case-insensitive):\n\n"
        + "\n".join(lines) + "\n\n"
        "A file whose suffix no configured rule checks (`x.7z`, `notes.txt`, a `.csv` without\n"
        "`validate.csv`) is *unchecked*, and the service's `on_unchecked` decides: `reject` lands it\n"
        "under the rejected prefix with the problem `not checked: no rule of this service's validate\n"
        "section checks '.gz' files (...)`; `accept` lands it under the valid prefix, its manifest\n"
        "entry marked `\"unchecked\": true`. Without `on_unchecked`, a service whose `validate`\n"
        "section (its own or from `defaults`) names any rule rejects unchecked files, and a service\n"
        "without one accepts them. An archive is unchecked when no rule checks any of its members;\n"
        "under `reject`, each member no rule checks is a problem of the archive. With `unpack: true`\n"
        "a `.zip` or tar lands as its members instead (see `unpack` above). A module may check files itself (the `api` module's\n"
        "`records_path`); what it checks is never unchecked.\n\n"
        "The JSON Schema file is resolved relative to the registry file, loaded and checked\n"
        "as a JSON Schema when the registry is read; its `$schema` picks the draft (2020-12\n"
        "when absent) and `format` is enforced. Validity is decided by a compiled validator\n"
        "(jsonschema-rs), so `pattern` is an ECMA-262 regular expression as the JSON Schema\n"
        "specification says (`\\d` and `\\w` match ASCII only, `$` only at the very end) and every\n"
        "`format` is checked (`email`, `uri`, `hostname`, `duration`...); the problem messages come\n"
        "from jsonschema. A schema jsonschema-rs cannot compile (draft 3, a `$ref` to another\n"
        "document, a Python-only regex) is checked by jsonschema alone. CSV types accept: `int` optional sign and\n"
        "ASCII digits; `float` what Python's `float()` reads; `date` `YYYY-MM-DD`; `datetime`\n"
        "ISO 8601 (`Z` allowed); `bool` `true false 1 0 yes no` (any case); `str` anything.\n"
        "HTML is parsed within a memory bound (documents up to 10 MiB, 1,000,000 nodes and 255\n"
        "levels of nesting; over it, a page is rejected with `not checked: ...`) and `required`\n"
        "selectors are CSS as the `cssselect` package reads them (docs/sources/web.md).\n"
        "`validate.csv.types` may only name columns listed in `validate.csv.columns` when both\n"
        f"are given. At most {MAX_PROBLEMS_PER_FILE} problems are listed per file, plus one\n"
        "counting the rest."
    )


def _modules_section(catalog: _Catalog) -> str:
    parts = [
        ("## Source modules\n\n"
         "The `source` keys of each built-in module, from its `source_schema`. Modules of\n"
         "other packages declare their own schema and are listed by `module-system modules`.")
    ]
    parts += _plugin_sections(catalog, "### `type: {name}`", "source_schema", "sources")
    return "\n\n".join(p for p in parts if p)


def _plugin_sections(catalog: _Catalog, heading: str, schema_attr: str, pages: str) -> list[str]:
    """A heading, summary, link to ``<pages>/<name>.md`` and key table per built-in plugin of ``catalog``."""
    parts = []
    infos = sorted((i for i in catalog.describe() if _normalise(i.package) == BUILTIN_PACKAGE), key=lambda i: i.name)
    for info in infos:
        title = heading.format(name=info.name)
        if info.error:
            parts.append(f"{title} (unavailable)\n\n`{info.target}` did not load: {_cell(info.error)}")
            continue
        cls = catalog.load(info.name)
        schema = getattr(cls, schema_attr)
        summary = _summary(cls)
        head = f"{title}\n\n`{info.target}`. " + (f"{summary} " if summary else "")
        head += f"See [{pages}/{info.name}.md]({pages}/{info.name}.md)."
        parts.append(head + "\n\n" + _table(schema_rows(schema)))
        parts.append("\n".join(_schema_notes(schema)))
    return parts


def _summary(cls: type) -> str:
    """The first paragraph of the module's (else the class's) docstring, as Markdown."""
    doc = getattr(sys.modules.get(cls.__module__), "__doc__", None) or cls.__doc__ or ""
    first = doc.strip().split("\n\n")[0]
    text = " ".join(first.split())
    text = re.sub(r":\w+:`~?([^`]+)`", r"`\1`", text).replace("``", "`")
    return _cell(text)


def _normalise(package: str) -> str:
    return re.sub(r"[-_.]+", "_", package).lower()


def _batch_section() -> str:
    return (
        "## The batch file\n\n"
        "JSON. Top level:\n\n" + _table(schema_rows(_BATCH_SCHEMA)) + "\n\n" + "\n".join(_schema_notes(_BATCH_SCHEMA))
        + "\n\nEach entry of `jobs`:\n\n" + _table(schema_rows(_JOB_SCHEMA)) + "\n\n" + "\n".join(_schema_notes(_JOB_SCHEMA))
        + "\n\nA duplicate `job_id` or a `service_id` the registry does not define is an error\n"
        "naming the job; so is malformed JSON, and so is a `job_id` that would make the job's log\n"
        "file name (`{job_id}_{service_id}_{module}.log`) or manifest name (`{job_id}.json`) longer\n"
        "than 255 bytes. The failed-jobs file a run writes\n"
        "(`failed_jobs_<run_id>.json` in the `--state-dir`, `temp` by default) is a batch file of this\n"
        "format.\n\n"
        "**Which registry a batch runs against:** `--registry` when given; else the batch's\n"
        "`registry` key (a path relative to the batch file); else `$MODULE_SYSTEM_REGISTRY`; else\n"
        "`./project_registry.yaml`. A failed-jobs file records the absolute path of its run's\n"
        "registry in `registry`, so `--batch-file` on it re-runs those jobs against the same\n"
        "services from any directory; the re-run hint printed under the summary also names it\n"
        "with `--registry` when it was not the default one."
    )


# --------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m common.config_docs", description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", action="store_true", help=f"write {DOC_PATH.name} instead of printing it")
    group.add_argument("--check", action="store_true", help=f"exit 1 if {DOC_PATH.name} is out of date")
    args = parser.parse_args(argv)

    import structlog

    # A module that fails to load logs a warning; keep it off stdout, which may be the page.
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    text = render()
    if args.write:
        DOC_PATH.parent.mkdir(parents=True, exist_ok=True)
        DOC_PATH.write_text(text, encoding="utf-8")
        click.echo(f"wrote {DOC_PATH}", err=True)
        return 0
    if args.check:
        current = DOC_PATH.read_text(encoding="utf-8") if DOC_PATH.exists() else None
        if current != text:
            click.echo(f"{DOC_PATH} is out of date: run `python -m common.config_docs --write`", err=True)
            return 1
        return 0
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
