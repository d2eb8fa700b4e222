"""The contract suite of file destinations, for a plugin's own tests to subclass.

Like :class:`~module_system.contract.ModuleContract` for sources: one pytest class written
against :class:`~module_system.FileDestination` alone, run against a real store by a
subclass that says how to configure one and read a key back. Import it from
``module_system.contract``::

    class TestMyDestinationContract(DestinationContract):
        @pytest.fixture
        def destination_cls(self):
            return MyDestination

        def make_config(self, tmp_path):
            return {"path": str(tmp_path / "store")}        # the registry keys, without `type`

        def read_key(self, config, key):
            path = Path(config["path"]) / key
            return path.read_bytes() if path.exists() else None

What is checked: ``config_schema`` is a closed, valid draft 2020-12 JSON Schema with valid
defaults; an unknown key is a ``ConfigError``; ``put_file`` stores and verifies (then
``skipped_same`` for the same bytes, ``uploaded`` again with ``skip_same=False``, a new
content replaces the old), also from several threads at once and for a file spanning
chunks; ``put_json``/``read_json`` round-trip and ``read_json`` of a missing key is None;
``delete_owned`` deletes what it wrote and nothing else; ``check`` passes on a good
config and raises ``DestinationUnusable`` on a bad one (:meth:`make_bad_config`);
``describe`` holds no secret; ``put_file_ahead`` shows nothing before ``commit`` says yes and
leaves nothing when it says no; and a whole ``module-system run`` (the built-in ``local``
source over a folder) lands valid and rejected files and the manifest in it.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from common.exceptions import ConfigError, UploadWithdrawn
from common.interfaces.destination import (
    DESTINATION_GROUP,
    DestinationSetup,
    DestinationUnusable,
    FileDestination,
    LandingFile,
)
from common.job_config import resolve_source
from common.manifest import manifest_key
from common.retry import RetryPolicy
from common.secret import Secret
from module_system.contract_run import check_closed_schema, registered_type, run_cli

__all__ = ["DestinationContract"]

#: Files of the run end to end (the built-in ``local`` source reads them from a folder).
_RUN_FILES: Mapping[str, bytes] = {
    "a.csv": b"id,name\n1,alpha\n2,beta\n",
    "bad.csv": b"id,name\nx,alpha\n",
    "sub/c.json": b'{"id": 3}',
    "sub/deeper/large.bin": bytes(i % 251 for i in range(1024 * 1024 + 17)),
}


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class DestinationContract:
    """Tests every file destination must pass. Subclass as ``Test<Name>Contract`` and provide the
    fixture ``destination_cls``, :meth:`make_config` and :meth:`read_key`; optionally
    :meth:`make_bad_config`. Servers a config needs come from an ``autouse`` fixture of the
    subclass, kept on ``self``."""

    # ------------------------------------------------------------------ hooks

    @pytest.fixture
    def destination_cls(self) -> type[FileDestination]:
        """The destination class under test: override this fixture in the subclass."""
        pytest.fail(f"{type(self).__name__} must define the fixture 'destination_cls'")

    def make_config(self, tmp_path: Path) -> dict[str, Any]:
        """The raw registry keys of a fresh, empty, usable destination (without ``type``)."""
        raise NotImplementedError(f"{type(self).__name__} must implement make_config(tmp_path)")

    def read_key(self, config: Mapping[str, Any], key: str) -> bytes | None:
        """The bytes stored under ``key`` of the destination ``config`` describes, read without
        the class under test (None when there is nothing)."""
        raise NotImplementedError(f"{type(self).__name__} must implement read_key(config, key)")

    def make_bad_config(self, tmp_path: Path) -> dict[str, Any]:
        """Raw keys of a destination whose ``check`` must raise ``DestinationUnusable``."""
        pytest.skip(f"{type(self).__name__} defines no make_bad_config")

    # ------------------------------------------------------------------ helpers

    def _open(self, cls: type[FileDestination], tmp_path: Path,
              raw: dict[str, Any] | None = None) -> tuple[FileDestination, Mapping[str, Any]]:
        raw = raw if raw is not None else self.make_config(tmp_path)
        config = resolve_source(raw, cls.config_schema, f"{cls.__name__} contract")
        setup = DestinationSetup(workers=4, timeout_s=10, state_dir=tmp_path / "state", base_dir=tmp_path)
        return cls(config, setup), raw

    @staticmethod
    def _retry() -> RetryPolicy:
        return RetryPolicy(attempts=2, backoff_s=0.01, max_backoff_s=0.1, stop=threading.Event())

    @staticmethod
    def _landing(tmp_path: Path, name: str, data: bytes) -> LandingFile:
        path = tmp_path / "fetched" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return LandingFile(path=path, name=name, size=len(data), sha256=_sha256(data),
                           source_uri=f"contract://source/{name}")

    # ------------------------------------------------------------------ the schema

    def test_config_schema_is_a_closed_json_schema_object(self, destination_cls: type[FileDestination]) -> None:
        assert isinstance(destination_cls, type) and issubclass(destination_cls, FileDestination), \
            "not a FileDestination subclass"
        check_closed_schema(destination_cls.config_schema, "config_schema")

    def test_unknown_key_is_a_config_error(self, destination_cls: type[FileDestination], tmp_path: Path) -> None:
        raw = {**self.make_config(tmp_path), "no_such_key_in_any_destination": 1}
        with pytest.raises(ConfigError, match="no_such_key_in_any_destination"):
            resolve_source(raw, destination_cls.config_schema)

    # ------------------------------------------------------------------ storing

    def test_put_file_stores_then_skips_the_same_bytes(self, destination_cls: type[FileDestination],
                                                       tmp_path: Path) -> None:
        dest, config = self._open(destination_cls, tmp_path)
        retry = self._retry()
        try:
            dest.check(retry)
            big = bytes(i % 253 for i in range(2 * 1024 * 1024 + 5))
            first = self._landing(tmp_path, "big.bin", big)
            assert dest.put_file("data/x/big.bin", first, retry) == "uploaded"
            assert self.read_key(config, "data/x/big.bin") == big
            assert dest.put_file("data/x/big.bin", first, retry) == "skipped_same"
            assert dest.put_file("data/x/big.bin", first, retry, skip_same=False) == "uploaded"
            other = self._landing(tmp_path, "other.bin", b"new content\n")
            assert dest.put_file("data/x/big.bin", other, retry) == "uploaded"
            assert self.read_key(config, "data/x/big.bin") == b"new content\n", "a new content replaces the old"
        finally:
            dest.close()

    def test_put_file_from_several_threads(self, destination_cls: type[FileDestination], tmp_path: Path) -> None:
        dest, config = self._open(destination_cls, tmp_path)
        retry = self._retry()
        files = {f"data/t/f{i}.txt": f"file {i}\n".encode() * (i + 1) for i in range(8)}
        try:
            dest.check(retry)
            with ThreadPoolExecutor(4) as pool:
                outcomes = list(pool.map(
                    lambda kv: dest.put_file(kv[0], self._landing(tmp_path, kv[0], kv[1]), retry), files.items()))
        finally:
            dest.close()
        assert outcomes == ["uploaded"] * len(files)
        assert {k: self.read_key(config, k) for k in files} == files

    def test_put_file_ahead_lands_only_on_commit(self, destination_cls: type[FileDestination], tmp_path: Path) -> None:
        """``put_file_ahead`` (what the engine calls for files of ``lands_ahead_from`` bytes or
        more, before their verdict): nothing is visible before ``commit`` says yes, and nothing
        is left when it says no (UploadWithdrawn)."""
        dest, config = self._open(destination_cls, tmp_path)
        retry = self._retry()
        try:
            dest.check(retry)
            data = bytes(i % 251 for i in range((dest.lands_ahead_from() or 0) + 64 * 1024))
            file = self._landing(tmp_path, "ahead.bin", data)
            asked: list[bool] = []

            def answer(yes: bool) -> Callable[[], bool]:
                def commit() -> bool:
                    assert self.read_key(config, "data/a/ahead.bin") is None, "not visible before the verdict"
                    asked.append(yes)
                    return yes
                return commit

            with pytest.raises(UploadWithdrawn):
                dest.put_file_ahead("data/a/ahead.bin", file, retry, answer(False))
            assert asked == [False] and self.read_key(config, "data/a/ahead.bin") is None
            assert dest.put_file_ahead("data/a/ahead.bin", file, retry, answer(True)) == "uploaded"
            assert asked == [False, True] and self.read_key(config, "data/a/ahead.bin") == data
        finally:
            dest.close()

    def test_json_documents_round_trip(self, destination_cls: type[FileDestination], tmp_path: Path) -> None:
        dest, _ = self._open(destination_cls, tmp_path)
        retry = self._retry()
        document = {"run_id": "r1", "files": [{"key": "a", "size": 3}], "note": "é"}
        try:
            dest.check(retry)
            assert dest.read_json("_manifests/s/missing.json", retry) is None
            assert dest.put_json("_manifests/s/j.json", document, retry) == "uploaded"
            assert dest.read_json("_manifests/s/j.json", retry) == document
            assert dest.put_json("_manifests/s/j.json", document, retry) == "skipped_same"
        finally:
            dest.close()

    def test_delete_owned_deletes_only_what_it_wrote(self, destination_cls: type[FileDestination],
                                                     tmp_path: Path) -> None:
        dest, config = self._open(destination_cls, tmp_path)
        retry = self._retry()
        try:
            dest.check(retry)
            dest.put_file("data/d/a.txt", self._landing(tmp_path, "a.txt", b"mine\n"), retry)
            assert dest.delete_owned("data/d/a.txt", retry) is True
            assert self.read_key(config, "data/d/a.txt") is None
            assert dest.delete_owned("data/d/never.txt", retry) is False
        finally:
            dest.close()

    # ------------------------------------------------------------------ pre-flight and description

    def test_check_passes_on_a_usable_destination(self, destination_cls: type[FileDestination],
                                                  tmp_path: Path) -> None:
        dest, _ = self._open(destination_cls, tmp_path)
        try:
            dest.check(self._retry())
        finally:
            dest.close()

    def test_check_refuses_an_unusable_destination(self, destination_cls: type[FileDestination],
                                                   tmp_path: Path) -> None:
        dest, _ = self._open(destination_cls, tmp_path, self.make_bad_config(tmp_path))
        try:
            with pytest.raises(DestinationUnusable):
                dest.check(self._retry())
        finally:
            dest.close()

    def test_describe_holds_no_secret(self, destination_cls: type[FileDestination], tmp_path: Path) -> None:
        dest, _ = self._open(destination_cls, tmp_path)
        try:
            text = dest.describe()
            assert isinstance(text, str) and text
            secrets = [v.reveal() for v in dest.config.values() if isinstance(v, Secret)]
            assert not [s for s in secrets if s and s in text], "describe() shows a secret"
        finally:
            dest.close()
            dest.close()

    # ------------------------------------------------------------------ a run end to end

    def test_a_run_lands_files_and_manifest_here(self, destination_cls: type[FileDestination],
                                                 tmp_path: Path) -> None:
        """``module-system run`` of the built-in ``local`` source into this destination: valid and
        rejected files, each rejected one's errors, and the manifest."""
        folder = tmp_path / "run-source"
        for name, data in _RUN_FILES.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(data)
        config = self.make_config(tmp_path)
        service = {
            "type": "local", "source": {"path": str(folder), "min_age_s": 0},
            "validate": {"csv": {"columns": ["id", "name"], "types": {"id": "int"}}}, "on_unchecked": "accept",
            "destination": {"type": registered_type(destination_cls, DESTINATION_GROUP), **config},
            "retry": {"attempts": 2, "backoff_s": 0.01, "max_backoff_s": 0.05}, "timeout_s": 30,
        }
        done = run_cli(tmp_path / "run", {"version": 1, "services": {"contract_service": service}},
                       [{"job_id": "contract_job", "service_id": "contract_service"}])
        assert done.report is not None, f"no report (exit {done.returncode}): {done.stderr.strip()[-2000:]}"
        [job] = done.report["jobs"]
        assert job["status"] == "succeeded", f"{job['status']}: {job.get('error')}"
        assert job["files"]["uploaded"] == len(_RUN_FILES) - 1 and job["files"]["rejected"] == 1, job["files"]
        assert done.returncode == 1, "a rejected file makes the exit code 1"
        raw = self.read_key(config, manifest_key("contract_service", "contract_job"))
        assert raw is not None, "no manifest"
        manifest = json.loads(raw)
        by_sha = {_sha256(data): name for name, data in _RUN_FILES.items()}
        assert sorted(e["sha256"] for e in manifest["files"]) == sorted(by_sha)
        for entry in manifest["files"]:
            name = by_sha[entry["sha256"]]
            assert entry["status"] == ("rejected" if name == "bad.csv" else "uploaded"), (name, entry["status"])
            assert self.read_key(config, entry["key"]) == _RUN_FILES[name], f"{name}: landed bytes differ"
        [bad] = [e for e in manifest["files"] if e["status"] == "rejected"]
        assert self.read_key(config, bad["key"] + ".errors.json") is not None, "no .errors.json beside bad.csv"
