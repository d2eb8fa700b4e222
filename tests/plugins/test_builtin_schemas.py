"""The built-in modules' schemas, which the catalog trusts instead of checking on every run."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings
from importlib.metadata import entry_points
from pathlib import Path

import jsonschema
import pytest

from common.plugins import ENTRY_POINT_GROUP, default_catalog

BUILT_INS = sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)
                   if ep.dist is not None and ep.dist.name == "module_system")


def test_every_built_in_module_is_registered_by_module_system() -> None:
    assert BUILT_INS == ["api", "ftp", "http", "local", "s3", "sftp", "web"]


@pytest.mark.parametrize("name", ["local", "s3", "sql"])
def test_built_in_destination_schema_is_a_valid_json_schema(name: str) -> None:
    from common.plugins import default_destinations

    schema = default_destinations().load(name).config_schema
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    assert all("description" in spec for spec in schema["properties"].values())


@pytest.mark.parametrize("name", BUILT_INS)
def test_built_in_source_schema_is_a_valid_json_schema(name: str) -> None:
    schema = default_catalog().load(name).source_schema
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        jsonschema.Draft202012Validator.check_schema(schema)


def test_a_run_without_json_schema_rules_never_imports_jsonschema(tmp_path: Path) -> None:
    """jsonschema (~50 ms of imports) only words errors; a clean configuration of built-in
    modules is judged by jsonschema-rs alone."""
    registry = tmp_path / "registry.yaml"
    registry.write_text(textwrap.dedent("""\
        version: 1
        defaults:
          destination: {bucket: landing-bucket, endpoint_url: "http://127.0.0.1:9"}
        services:
          drop:
            type: ftp
            source: {host: 127.0.0.1, user: loader, password: not-a-real-secret, path: /out}
            validate:
              csv: {columns: [id, name], types: {id: int}}
          mirror:
            type: s3
            source: {bucket: source-bucket, prefix: in/}
        """))
    batch = tmp_path / "batch.json"
    batch.write_text('{"jobs": [{"job_id": "a", "service_id": "drop"}, {"job_id": "b", "service_id": "mirror"}]}')
    probe = textwrap.dedent(f"""\
        import sys
        from pathlib import Path
        import orchestrator.cli_init
        from common.job_config import load_batch, load_registry
        from common.plugins import default_catalog
        registry = load_registry(Path({str(registry)!r}))
        load_batch(Path({str(batch)!r}), registry)
        for name in ("ftp", "s3", "web", "api"):
            default_catalog().load(name)
        print(sorted(m for m in sys.modules if m.split(".")[0] == "jsonschema"))
        """)
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_built_in_modules_import_only_the_sdk() -> None:
    """The built-in modules are written as a plugin would be: from ``module_system`` and their own
    package, never from the framework's internals (``common``, ``orchestrator``)."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "modules"
    offending = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else (
                [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            offending += [f"{path.relative_to(root)}: {n}" for n in names if n.split(".")[0] in ("common", "orchestrator")]
    assert not offending, offending
