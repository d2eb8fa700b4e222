"""The configuration edge: interpolation, defaults, merging, secrets, frozen results."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import pytest
import yaml

from common.exceptions import ConfigError
from common.job_config import load_batch, load_registry, merge
from common.secret import Secret
from destinations.s3 import s3_settings


def write(tmp_path: Path, registry: dict[str, Any], jobs: list[dict[str, Any]] | None = None) -> Path:
    (tmp_path / "schema.json").write_text(json.dumps({"type": "object"}))
    path = tmp_path / "registry.yaml"
    path.write_text(yaml.safe_dump(registry))
    if jobs is not None:
        (tmp_path / "batch.json").write_text(json.dumps({"jobs": jobs}))
    return path


def ftp_registry(**service: Any) -> dict[str, Any]:
    body = {"type": "ftp", "source": {"host": "h", "password": "${PW}"}, **service}
    return {"version": 1, "defaults": {"destination": {"bucket": "landing"}}, "services": {"svc": body}}


def test_defaults_filled_from_schemas(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PW", "pw")
    svc = load_registry(write(tmp_path, ftp_registry())).services["svc"]
    assert svc.source["port"] == 21 and svc.source["path"] == "/" and svc.source["include"] == ("*",)
    assert svc.retry.attempts == 3 and svc.retry.backoff_s == 0.5 and svc.timeout_s == 30
    [dest] = svc.destinations
    assert dest.type == "s3" and dest.name == "s3" and dest.kind == "files"
    assert dest.config["bucket"] == "landing" and dest.config["region"] == "us-east-1"
    assert dest.config["checksum"] == "sha256" and dest.config["endpoint_url"] is None
    assert dest.prefix == "data/ftp/{service_id}/validated/"
    assert dest.rejected_prefix == "data/ftp/{service_id}/rejected/"


def test_interpolation_with_default_and_coercion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PW", "pw")
    monkeypatch.setenv("PORT", "2121")
    monkeypatch.setenv("TLS", "false")
    monkeypatch.delenv("HOSTX", raising=False)
    reg = ftp_registry()
    reg["services"]["svc"]["source"].update(host="${HOSTX:-ftp.example}", port="${PORT}", tls="${TLS}",
                                            path="/in/${PORT}/x")
    reg["defaults"]["destination"]["endpoint_url"] = "${UNSET_ENDPOINT_X:-}"
    svc = load_registry(write(tmp_path, reg)).services["svc"]
    assert svc.source["host"] == "ftp.example"
    assert svc.source["port"] == 2121 and svc.source["tls"] is False
    assert svc.source["path"] == "/in/2121/x"
    assert s3_settings(svc.destinations[0].config).endpoint_url is None  # empty means AWS


def test_secrets_never_print(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PW", "s3cr3t-value")
    svc = load_registry(write(tmp_path, ftp_registry())).services["svc"]
    password = svc.source["password"]
    assert isinstance(password, Secret) and password.reveal() == "s3cr3t-value"
    assert "s3cr3t-value" not in repr(svc) and "s3cr3t-value" not in str(svc.source)
    assert f"{password}" == "'***'"
    assert pickle.loads(pickle.dumps(svc)) == svc


def test_config_is_frozen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PW", "pw")
    svc = load_registry(write(tmp_path, ftp_registry())).services["svc"]
    with pytest.raises(TypeError):
        svc.source["host"] = "other"  # type: ignore[index]
    with pytest.raises(AttributeError):
        svc.timeout_s = 1  # type: ignore[misc]


def test_service_keys_win_over_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PW", "pw")
    reg = ftp_registry(retry={"attempts": 7}, destination={"prefix": "custom/{job_id}"})
    reg["defaults"]["retry"] = {"attempts": 2, "backoff_s": 0.1}
    svc = load_registry(write(tmp_path, reg)).services["svc"]
    assert svc.retry.attempts == 7 and svc.retry.backoff_s == 0.1
    [dest] = svc.destinations
    assert dest.config["bucket"] == "landing" and dest.prefix == "custom/{job_id}"


def test_params_and_fallbacks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PW", "pw")
    reg = ftp_registry(fallback=[{"host": "mirror", "path": "/mirror"}])
    path = write(tmp_path, reg, [{"job_id": "a", "service_id": "svc"},
                                 {"job_id": "b", "service_id": "svc", "priority": 9,
                                  "params": {"path": "/other", "include": ["*.csv"]}}])
    registry = load_registry(path)
    batch = load_batch(tmp_path / "batch.json", registry)
    a, b = batch.jobs
    assert a.priority == 5 and b.priority == 9 and (a.index, b.index) == (0, 1)
    assert a.sources[0]["path"] == "/" and a.sources[1]["host"] == "mirror"
    assert b.sources[0]["path"] == "/other" and b.sources[0]["include"] == ("*.csv",)
    # a fallback keeps what makes it an alternative; params still apply to the rest
    assert b.sources[1]["host"] == "mirror" and b.sources[1]["path"] == "/mirror"
    assert b.sources[1]["include"] == ("*.csv",)
    assert isinstance(b.sources[1]["password"], Secret)


def test_csv_types_must_name_listed_columns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PW", "pw")
    reg = ftp_registry(validate={"csv": {"columns": ["a"], "types": {"b": "int"}}})
    with pytest.raises(ConfigError, match=r"key 'validate.csv.types.b'"):
        load_registry(write(tmp_path, reg))


def test_json_schema_loaded_relative_to_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PW", "pw")
    svc = load_registry(write(tmp_path, ftp_registry(validate={"json_schema": "schema.json"}))).services["svc"]
    assert svc.validate.json_schema_path == (tmp_path / "schema.json").resolve()
    assert dict(svc.validate.json_schema) == {"type": "object"}


def test_error_never_quotes_secret_value(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PW", "pw")
    reg = ftp_registry()
    reg["services"]["svc"]["source"]["port"] = "do-not-echo-me"
    with pytest.raises(ConfigError) as info:
        load_registry(write(tmp_path, reg))
    assert "do-not-echo-me" not in str(info.value)
    assert "service 'svc'" in str(info.value) and "source.port" in str(info.value)


def test_config_error_pickles() -> None:
    err = ConfigError("f.yaml: service 's': key 'k': bad", file="f.yaml", key="k")
    copy = pickle.loads(pickle.dumps(err))
    assert str(copy) == str(err) and copy.key == "k"


def test_merge_is_deep_and_right_biased() -> None:
    assert merge({"a": {"x": 1, "y": 2}, "b": [1]}, {"a": {"y": 3}, "b": [2]}) == {"a": {"x": 1, "y": 3}, "b": [2]}
