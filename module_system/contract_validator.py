"""The contract suite of validators, for a plugin's own tests to subclass.

Like :class:`~module_system.contract.ModuleContract` for sources: one pytest class written
against :class:`~module_system.Validator` alone, run on real files by a subclass that gives
its ``validate`` keys and files it must accept and reject. Import it from
``module_system.contract``::

    class TestMyValidatorContract(ValidatorContract):
        @pytest.fixture
        def validator_cls(self):
            return MyValidator

        def make_config(self, tmp_path):
            return {"geojson": {"max_features": 10}}    # the service's validate keys it owns

        def valid_files(self):
            return {"a.geojson": b'{"type": "FeatureCollection", "features": []}'}

        def invalid_files(self):
            return {"b.geojson": b"{}"}

What is checked: ``validate_schema`` is a valid draft 2020-12 JSON Schema object whose
``properties`` name the keys it owns, with valid defaults; the config resolves (defaults
filled) and the class builds from it; it applies to every given file; each valid file gives no
problem and each invalid one at least one ``Problem`` with a message, the same from eight
threads at once as from one; files are never modified; a misspelt key under an owned key is a
config error of ``module-system validate`` worded like the built-ins' (exit 2, one line naming
the file, the service and ``validate.<key>.<misspelt>``); and a whole ``module-system run``
(the built-in ``local`` source and destination) lands the valid files and rejects the invalid
ones with their problems in ``<name>.errors.json``.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from common.interfaces.validator import VALIDATOR_GROUP, Validator, ValidatorSetup
from common.job_config import resolve_source
from common.manifest import manifest_key
from common.problems import Problem
from module_system.contract_run import registered_type, run_cli

__all__ = ["ValidatorContract"]


class ValidatorContract:
    """Tests every validator must pass. Subclass as ``Test<Name>Contract`` and provide the fixture
    ``validator_cls``, :meth:`make_config`, :meth:`valid_files` and :meth:`invalid_files`."""

    # ------------------------------------------------------------------ hooks

    @pytest.fixture
    def validator_cls(self) -> type[Validator]:
        """The validator class under test: override this fixture in the subclass."""
        pytest.fail(f"{type(self).__name__} must define the fixture 'validator_cls'")

    def make_config(self, tmp_path: Path) -> dict[str, Any]:
        """The ``validate`` keys of a service using the validator (only keys it owns)."""
        raise NotImplementedError(f"{type(self).__name__} must implement make_config(tmp_path)")

    def valid_files(self) -> Mapping[str, bytes]:
        """Files (source-relative name -> bytes) the configured validator accepts."""
        raise NotImplementedError(f"{type(self).__name__} must implement valid_files()")

    def invalid_files(self) -> Mapping[str, bytes]:
        """Files the configured validator rejects (at least one problem each)."""
        raise NotImplementedError(f"{type(self).__name__} must implement invalid_files()")

    # ------------------------------------------------------------------ helpers

    def _build(self, cls: type[Validator], tmp_path: Path) -> Validator:
        config = resolve_source(self.make_config(tmp_path), cls.validate_schema, f"{cls.__name__} contract")
        return cls(config, ValidatorSetup("contract_service", tmp_path))

    @staticmethod
    def _write(folder: Path, files: Mapping[str, bytes]) -> dict[str, Path]:
        paths = {}
        for name, data in files.items():
            path = folder.joinpath(*name.split("/"))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            paths[name] = path
        return paths

    def _all_files(self) -> dict[str, bytes]:
        files = {**self.valid_files(), **self.invalid_files()}
        assert len(files) == len(self.valid_files()) + len(self.invalid_files()), \
            "valid_files and invalid_files must not share a name"
        return files

    # ------------------------------------------------------------------ the schema

    def test_validate_schema_is_a_json_schema_object_naming_its_keys(self, validator_cls: type[Validator]) -> None:
        assert isinstance(validator_cls, type) and issubclass(validator_cls, Validator), "not a Validator subclass"
        schema = validator_cls.validate_schema
        assert schema.get("type") == "object", "validate_schema must have type 'object'"
        owned = schema.get("properties", {})
        assert owned, "validate_schema must name the validate keys it owns in its properties"
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            jsonschema.Draft202012Validator.check_schema(schema)
        for key, spec in owned.items():
            for name, prop in spec.get("properties", {}).items():
                if "default" in prop:
                    errors = list(jsonschema.Draft202012Validator(prop).iter_errors(prop["default"]))
                    assert not errors, f"default of {key}.{name} does not match its own schema: {errors[0].message}"

    def test_config_resolves_and_builds(self, validator_cls: type[Validator], tmp_path: Path) -> None:
        raw = self.make_config(tmp_path)
        owned = set(validator_cls.validate_schema.get("properties", {}))
        assert set(raw) <= owned, f"make_config sets keys the validator does not own: {set(raw) - owned}"
        self._build(validator_cls, tmp_path)

    # ------------------------------------------------------------------ checking

    def test_valid_files_pass_and_invalid_files_have_problems(self, validator_cls: type[Validator],
                                                              tmp_path: Path) -> None:
        validator = self._build(validator_cls, tmp_path)
        valid, invalid = self.valid_files(), self.invalid_files()
        assert valid and invalid, "give at least one valid and one invalid file"
        paths = self._write(tmp_path / "files", {**valid, **invalid})
        for name in [*valid, *invalid]:
            assert validator.applies_to(name), f"{name}: applies_to says no"
            problems = validator.check(paths[name], name)
            assert isinstance(problems, list) and all(isinstance(p, Problem) for p in problems), \
                f"{name}: check must return a list of Problem"
            if name in valid:
                assert problems == [], f"{name}: a valid file has problems: {problems}"
            else:
                assert problems and all(p.message for p in problems), f"{name}: an invalid file has no problem"

    def test_checks_from_several_threads_agree_and_modify_nothing(self, validator_cls: type[Validator],
                                                                  tmp_path: Path) -> None:
        validator = self._build(validator_cls, tmp_path)
        files = self._all_files()
        paths = self._write(tmp_path / "files", files)
        alone = {name: validator.check(paths[name], name) for name in files}
        with ThreadPoolExecutor(8) as pool:
            together = list(pool.map(lambda name: (name, validator.check(paths[name], name)), list(files) * 4))
        for name, problems in together:
            assert problems == alone[name], f"{name}: a check in a thread gave other problems"
        for name, path in paths.items():
            assert hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(files[name]).digest(), \
                f"{name}: check modified the file"

    # ------------------------------------------------------------------ through the CLI

    def _service(self, validator_cls: type[Validator], tmp_path: Path, validate: dict[str, Any]) -> dict[str, Any]:
        registered_type(validator_cls, VALIDATOR_GROUP)  # a run finds validators only through entry points
        folder = tmp_path / "run-source"
        self._write(folder, self._all_files())
        return {"type": "local", "source": {"path": str(folder), "min_age_s": 0}, "validate": validate,
                "on_unchecked": "accept", "destination": {"type": "local", "path": str(tmp_path / "landing")},
                "retry": {"attempts": 2, "backoff_s": 0.01, "max_backoff_s": 0.05}}

    def test_a_misspelt_key_is_a_config_error_like_the_builtins(self, validator_cls: type[Validator],
                                                                tmp_path: Path) -> None:
        raw = self.make_config(tmp_path)
        closed = [k for k in raw if validator_cls.validate_schema["properties"][k].get("additionalProperties") is False]
        if not closed:
            pytest.skip("no owned key of the config is a closed object (additionalProperties: false)")
        key = closed[0]
        validate = {**raw, key: {**raw[key], "no_such_key_in_any_validator": 1}}
        done = run_cli(tmp_path / "run", {"version": 1, "services": {
            "contract_service": self._service(validator_cls, tmp_path, validate)}},
            [{"job_id": "contract_job", "service_id": "contract_service"}])
        assert done.returncode == 2, done.stderr
        [line] = done.stderr.strip().splitlines()
        assert "project_registry.yaml" in line and "service 'contract_service'" in line, line
        assert f"key 'validate.{key}.no_such_key_in_any_validator'" in line, line

    def test_a_run_lands_valid_files_and_rejects_invalid_ones(self, validator_cls: type[Validator],
                                                              tmp_path: Path) -> None:
        done = run_cli(tmp_path / "run", {"version": 1, "services": {
            "contract_service": self._service(validator_cls, tmp_path, self.make_config(tmp_path))}},
            [{"job_id": "contract_job", "service_id": "contract_service"}])
        assert done.report is not None, f"no report (exit {done.returncode}): {done.stderr.strip()[-2000:]}"
        [job] = done.report["jobs"]
        assert job["status"] == "succeeded", f"{job['status']}: {job.get('error')}"
        valid, invalid = self.valid_files(), self.invalid_files()
        assert job["files"]["uploaded"] == len(valid) and job["files"]["rejected"] == len(invalid), job["files"]
        landing = tmp_path / "landing"
        manifest = json.loads((landing / manifest_key("contract_service", "contract_job")).read_bytes())
        by_sha = {hashlib.sha256(data).hexdigest(): name for name, data in {**valid, **invalid}.items()}
        for entry in manifest["files"]:
            name = by_sha[entry["sha256"]]
            assert entry["status"] == ("rejected" if name in invalid else "uploaded"), (name, entry["status"])
            if name in invalid:
                errors = json.loads((landing / (entry["key"] + ".errors.json")).read_bytes())
                assert errors["errors"] and all(e["message"] for e in errors["errors"]), f"{name}: {errors}"
