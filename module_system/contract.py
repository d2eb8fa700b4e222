"""The contract suite every source module must pass, for its own tests to subclass.

Like fsspec's ``tests/abstract/``: one pytest class of tests written against
:class:`~module_system.BaseModule` alone, run against a real source by a subclass
that says how to seed one. Needs pytest (the ``test`` extra)::

    import pytest
    from module_system.contract import ModuleContract

    class TestMyModuleContract(ModuleContract):
        @pytest.fixture
        def module_cls(self):
            return MyModule

        def make_source(self, tmp_path, files):
            ...  # put each of ``files`` (relative name -> bytes) in a fresh source
            return {"host": ..., "path": ...}   # the raw registry ``source`` section

        def make_bad_source(self, tmp_path):
            return {"host": ..., "path": "/does/not/exist"}

The base class has no ``Test`` prefix, so pytest collects only the subclasses.
A subclass that needs servers or other fixtures in ``make_source`` takes them in an
``autouse`` fixture of its own and keeps them on ``self`` (pytest makes a fresh
instance per test).

What is checked: the ``source_schema`` is a valid draft 2020-12 JSON Schema of
``type: object`` with ``additionalProperties: false`` and valid defaults, checked with
warnings as errors; :func:`resolve_source` accepts the seeded source; ``fetch``
yields one :class:`~module_system.FetchedFile` per seeded file, with its name
(sub-folders kept, ``/``-separated), size, SHA-256 and bytes on disk, in the same
order every time; ``ctx.stop`` set before ``fetch`` reads at most one file;
``close()`` may be called twice, before any fetch and after a fetch abandoned after
its first file; a bad source raises a ``SourceError`` subclass that pickles; ``supports``
names only keys the framework knows.

A :class:`~module_system.FileSource` is checked for the template's promises too: its
listing is stable, one entry per ``source_uri``, URIs without credentials, listed sizes true;
``download`` gives each entry's bytes, also from several threads at once; the template's
``include``/``exclude`` keys filter; a small ``max_file_bytes`` rejects the larger files
and lands the others (never an exception); with ``incremental`` an entry whose identity the
last manifest holds is not downloaded; downloads from four threads under a per-host cap of
two never hold more than two connections.

A run end to end: ``module-system run`` (a subprocess) of a service of the installed type,
with a ``validate`` section and the built-in ``local`` destination, lands every file valid or
rejected with its bytes, the manifest and the report; a misspelt source key exits 2 with one
line naming the file, the service and the key. Sources that do not store arbitrary bytes set
:attr:`ModuleContract.files` to what they can hold and override
:meth:`ModuleContract.expected_files` when what they yield differs.

:class:`DestinationContract` (``module_system.contract_destination``) is the same for
destinations, :class:`ValidatorContract` (``module_system.contract_validator``) for validators.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pickle
import threading
import warnings
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

import pytest

from common.config_model import ValidateConfig
from common.exceptions import ConfigError, SourceError, is_transient
from common.host_limiter import HostLimiters, JobHosts
from common.interfaces.base_module import (
    BaseModule,
    FetchedFile,
    FetchFailed,
    JobContext,
    Unchanged,
    Validators,
)
from common.interfaces.file_source import Entry, FileSource
from common.job_config import resolve_source
from common.manifest import manifest_key
from common.plugins import ENTRY_POINT_GROUP
from common.problems import Problem
from common.retry import RetryPolicy
from common.secret import redact_url
from common.validators import ValidatorSet
from module_system.contract_destination import DestinationContract
from module_system.contract_run import check_closed_schema, registered_type, run_cli
from module_system.contract_validator import ValidatorContract

__all__ = ["CONTRACT_BAD_CSV", "CONTRACT_FILES", "DestinationContract", "ModuleContract", "ValidatorContract", "fetch_all",
           "make_context", "resolve_source"]

#: The files every contract run seeds: sub-folders, a space in a name, an empty file and
#: one that spans two 1 MiB chunks.
CONTRACT_FILES: Mapping[str, bytes] = {
    "a.csv": b"id,name\n1,alpha\n2,beta\n",
    "b.json": b'{"id": 1, "amount": 2.5}',
    "empty.txt": b"",
    "sub/c.txt": b"third file\n",
    "sub/deeper/d e.bin": bytes(range(256)) * 4,
    "sub/deeper/large.bin": bytes(i % 251 for i in range(1024 * 1024 + 17)),
}


#: A CSV that :meth:`ModuleContract.run_validate` rejects (``id`` is not an integer): seeded as
#: ``bad.csv`` for the run end to end, so that the rejected path is taken too.
CONTRACT_BAD_CSV = b"id,name\nx,alpha\n"


def make_context(*, stop: threading.Event | None = None, validators: Validators | None = None,
                 attempts: int = 2, backoff_s: float = 0.01, timeout_s: float = 10.0,
                 module: str = "contract", service_id: str = "contract_service",
                 job_id: str = "contract_job", run_id: str = "contract_run") -> JobContext:
    """A :class:`~module_system.JobContext` for running a module outside a batch.

    ``validators`` defaults to none configured (every file valid); the retry policy
    makes ``attempts`` tries with short waits and gives up early once ``stop`` is set.
    """
    stop = stop if stop is not None else threading.Event()
    if validators is None:
        validators = ValidatorSet(ValidateConfig(json_schema_path=None, json_schema=None, csv=None, html=None))
    return JobContext(
        run_id=run_id, job_id=job_id, service_id=service_id, module=module, validators=validators,
        retry=RetryPolicy(attempts=attempts, backoff_s=backoff_s, max_backoff_s=max(backoff_s, 0.1), stop=stop),
        timeout_s=timeout_s, stop=stop,
    )


def fetch_all(module: BaseModule, workdir: Path) -> list[FetchedFile | FetchFailed | Unchanged]:
    """Everything ``module.fetch(workdir)`` yields, then ``close()``, as the framework does."""
    try:
        return list(module.fetch(workdir))
    finally:
        module.close()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ModuleContract:
    """Tests every source module must pass. Subclass as ``Test<Name>Contract`` and provide:

    * the fixture ``module_cls``: the :class:`~module_system.BaseModule` subclass under test;
    * :meth:`make_source`: seed a fresh source with given files, return its raw ``source`` dict;
    * :meth:`make_bad_source` (optional): a raw source whose ``fetch`` must raise a
      ``SourceError``; without it that test is skipped.

    Sources that do not store arbitrary bytes (an API rendering records, a crawl of pages):
    set :attr:`files` to what the source can hold, and override :meth:`expected_files` when
    what ``fetch`` yields differs from what was seeded (other names, rendered content).
    :meth:`run_files`, :attr:`expected_rejected` and :meth:`run_validate` shape the run end to
    end through ``module-system run``.
    """

    files: ClassVar[Mapping[str, bytes]] = CONTRACT_FILES
    """What :meth:`make_source` is asked to seed (relative name -> content)."""
    expected_rejected: ClassVar[frozenset[str]] = frozenset({"bad.csv"})
    """Names (as ``fetch`` yields them) that :meth:`run_validate` rejects in the run end to end."""

    # ------------------------------------------------------------------ hooks

    @pytest.fixture
    def module_cls(self) -> type[BaseModule]:
        """The module class under test: override this fixture in the subclass."""
        pytest.fail(f"{type(self).__name__} must define the fixture 'module_cls'")

    def make_source(self, tmp_path: Path, files: dict[str, bytes]) -> dict[str, Any]:
        """Seed a new source with ``files`` and return its raw registry ``source`` section.

        ``files`` maps relative ``/``-separated names (sub-folders included) to content.
        ``tmp_path`` is an empty directory of this test, free for the source's own use.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement make_source(tmp_path, files)")

    def make_bad_source(self, tmp_path: Path) -> dict[str, Any]:
        """A raw source whose ``fetch`` raises a SourceError (e.g. a folder that does not exist)."""
        pytest.skip(f"{type(self).__name__} defines no make_bad_source")

    def expected_files(self, seeded: Mapping[str, bytes]) -> Mapping[str, bytes]:
        """What ``fetch`` yields (name -> bytes) from a source seeded with ``seeded``; default:
        the seeded files themselves. Override it for a source that renders what it holds."""
        return seeded

    def run_files(self) -> dict[str, bytes]:
        """What the run end to end seeds: :attr:`files` and a ``bad.csv`` the run's validate
        section rejects. A source that cannot hold it returns its own files, and sets
        :attr:`expected_rejected` to the names the validate section rejects (maybe none)."""
        return {**self.files, "bad.csv": CONTRACT_BAD_CSV}

    def run_validate(self) -> dict[str, Any]:
        """The service's ``validate`` section in the run end to end (files no rule checks are
        accepted: ``on_unchecked: accept``)."""
        return {"csv": {"columns": ["id", "name"], "types": {"id": "int"}}}

    @property
    def produced(self) -> Mapping[str, bytes]:
        """:meth:`expected_files` of :attr:`files`."""
        return self.expected_files(dict(self.files))

    # ------------------------------------------------------------------ helpers

    def _module(self, module_cls: type[BaseModule], tmp_path: Path, ctx: JobContext | None = None) -> BaseModule:
        """An instance over a source freshly seeded with :attr:`files` under ``tmp_path/source``."""
        seed = tmp_path / "source"
        seed.mkdir(exist_ok=True)
        raw = self.make_source(seed, dict(self.files))
        source = resolve_source(raw, module_cls.source_schema, f"{module_cls.__name__} contract")
        return module_cls(source, ctx or make_context())

    # ------------------------------------------------------------------ the schema

    def test_source_schema_is_a_closed_json_schema_object(self, module_cls: type[BaseModule]) -> None:
        assert isinstance(module_cls, type) and issubclass(module_cls, BaseModule), "not a BaseModule subclass"
        schema = module_cls.source_schema
        assert isinstance(schema, Mapping), "source_schema must be a mapping"
        check_closed_schema(schema, "source_schema")
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            for name, prop in schema.get("properties", {}).items():
                if prop.get("x-secret"):
                    types = prop.get("type", [])
                    assert "string" in ([types] if isinstance(types, str) else types), \
                        f"x-secret property {name!r} must be of type string"

    def test_seeded_source_resolves_with_defaults(self, module_cls: type[BaseModule], tmp_path: Path) -> None:
        seed = tmp_path / "source"
        seed.mkdir()
        raw = self.make_source(seed, dict(self.files))
        source = resolve_source(raw, module_cls.source_schema)
        for name, prop in module_cls.source_schema.get("properties", {}).items():
            if "default" in prop:
                assert name in source, f"default of {name!r} was not filled in"
        module_cls(source, make_context()).close()

    def test_unknown_source_key_is_a_config_error(self, module_cls: type[BaseModule], tmp_path: Path) -> None:
        seed = tmp_path / "source"
        seed.mkdir()
        raw = {**self.make_source(seed, dict(self.files)), "no_such_key_in_any_module": 1}
        with pytest.raises(ConfigError, match="no_such_key_in_any_module"):
            resolve_source(raw, module_cls.source_schema)

    # ------------------------------------------------------------------ fetching

    def test_fetch_yields_each_file_complete_on_disk(self, module_cls: type[BaseModule], tmp_path: Path) -> None:
        workdir = tmp_path / "work"
        workdir.mkdir()
        got = fetch_all(self._module(module_cls, tmp_path), workdir)
        failed = [f for f in got if not isinstance(f, FetchedFile)]
        assert not failed, f"fetch yielded failures: {failed}"
        names = sorted(f.name for f in got)
        produced = self.produced
        assert names == sorted(produced), f"one FetchedFile per seeded file, names kept: got {names}"
        for f in got:
            assert isinstance(f, FetchedFile)
            expected = produced[f.name]
            assert f.path.resolve().is_relative_to(workdir.resolve()), f"{f.name}: {f.path} is outside the workdir"
            assert f.path.read_bytes() == expected, f"{f.name}: content differs"
            assert f.size == len(expected), f"{f.name}: size {f.size}, expected {len(expected)}"
            assert f.sha256 == _sha256(expected), f"{f.name}: sha256 differs"
            assert isinstance(f.source_uri, str) and f.source_uri, f"{f.name}: empty source_uri"
            assert all(isinstance(k, str) and isinstance(v, str) for k, v in f.identity.items()), \
                f"{f.name}: identity must map str to str"

    def test_names_are_stable_across_fetches(self, module_cls: type[BaseModule], tmp_path: Path) -> None:
        module = self._module(module_cls, tmp_path)
        first = fetch_all(module, tmp_path / "one")
        again = fetch_all(module_cls(module.source, make_context()), tmp_path / "two")
        assert [f.name for f in first] == [f.name for f in again], \
            f"names and order must not change: {[f.name for f in first]} then {[f.name for f in again]}"
        assert [getattr(f, "sha256", None) for f in first] == [getattr(f, "sha256", None) for f in again]

    def test_validate_returns_a_list_of_problems(self, module_cls: type[BaseModule], tmp_path: Path) -> None:
        module = self._module(module_cls, tmp_path)
        try:
            for fetched in module.fetch(tmp_path / "work"):
                assert isinstance(fetched, FetchedFile)
                problems = module.validate(fetched)
                if problems is None:  # no rule checks this file: the service's on_unchecked decides
                    continue
                assert isinstance(problems, list), f"{fetched.name}: validate must return a list or None"
                assert all(isinstance(p, Problem) for p in problems), f"{fetched.name}: not Problem objects"
        finally:
            module.close()

    # ------------------------------------------------------------------ stopping and closing

    def test_stop_set_before_fetch_reads_at_most_one_file(self, module_cls: type[BaseModule],
                                                          tmp_path: Path) -> None:
        ctx = make_context()
        ctx.stop.set()
        got = fetch_all(self._module(module_cls, tmp_path, ctx=ctx), tmp_path / "work")
        assert len(got) <= 1, f"fetch went on after ctx.stop was set: {[f.name for f in got]}"

    def test_close_is_idempotent_without_fetch(self, module_cls: type[BaseModule], tmp_path: Path) -> None:
        module = self._module(module_cls, tmp_path)
        module.close()
        module.close()

    def test_close_after_fetch_abandoned_after_first_file(self, module_cls: type[BaseModule],
                                                          tmp_path: Path) -> None:
        module = self._module(module_cls, tmp_path)
        files: Iterator[FetchedFile | FetchFailed | Unchanged] = module.fetch(tmp_path / "work")
        first = next(files)
        assert isinstance(first, FetchedFile)
        close = getattr(files, "close", None)  # a generator: closed as the framework closes it
        if close is not None:
            close()
        module.close()
        module.close()

    # ------------------------------------------------------------------ errors

    def test_bad_source_raises_a_source_error_that_pickles(self, module_cls: type[BaseModule],
                                                          tmp_path: Path) -> None:
        seed = tmp_path / "source"
        seed.mkdir()
        raw = self.make_bad_source(seed)
        source = resolve_source(raw, module_cls.source_schema)
        with pytest.raises(SourceError) as info:
            fetch_all(module_cls(source, make_context()), tmp_path / "work")
        err = info.value
        clone = pickle.loads(pickle.dumps(err))
        assert type(clone) is type(err), "the error must unpickle as its own class"
        assert str(clone) == str(err) and str(err), "the message must survive pickling"
        assert getattr(clone, "fields", None) == getattr(err, "fields", None), "fields must survive pickling"
        assert is_transient(clone) == is_transient(err)

    def test_supports_names_only_known_keys(self, module_cls: type[BaseModule]) -> None:
        known = {"incremental", "rate_limit", "transfers", "delay"}
        assert set(module_cls.supports) <= known, f"unknown keys in supports: {set(module_cls.supports) - known}"

    # ------------------------------------------------------------------ the file-source template

    def _file_source(self, module_cls: type[BaseModule], tmp_path: Path, ctx: JobContext | None = None,
                     **keys: Any) -> FileSource:
        if not issubclass(module_cls, FileSource):
            pytest.skip(f"{module_cls.__name__} is not a FileSource")
        seed = tmp_path / "source"
        seed.mkdir(exist_ok=True)
        raw = {**self.make_source(seed, dict(self.files)), **keys}
        source = resolve_source(raw, module_cls.source_schema, f"{module_cls.__name__} contract")
        return module_cls(source, ctx or make_context())

    def test_listing_is_stable_unique_and_without_credentials(self, module_cls: type[BaseModule],
                                                             tmp_path: Path) -> None:
        module = self._file_source(module_cls, tmp_path)
        try:
            first, again = list(module.list_entries()), list(module.list_entries())
        finally:
            module.close()
        assert [e.name for e in first] == [e.name for e in again], "the listing order must not change"
        produced = self.produced
        assert sorted(e.name for e in first) == sorted(produced), "one entry per seeded file, names kept"
        uris = [e.source_uri for e in first]
        assert len(set(uris)) == len(uris), "one entry per source_uri"
        assert all(redact_url(u) == u for u in uris), f"credentials in a source_uri: {uris}"
        for entry in first:
            assert entry.size is None or entry.size == len(produced[entry.name]), f"{entry.name}: listed size"
            assert all(isinstance(k, str) and isinstance(v, str) for k, v in entry.identity.items())

    def test_downloads_from_several_threads_give_each_entry_its_bytes(self, module_cls: type[BaseModule],
                                                                      tmp_path: Path) -> None:
        module = self._file_source(module_cls, tmp_path)
        workdir = tmp_path / "work"
        workdir.mkdir()

        def read(entry: Entry) -> tuple[str, bytes]:
            got = module.fetch_entry(entry, workdir)
            assert isinstance(got, FetchedFile), f"{entry.name}: {got}"
            return entry.name, got.path.read_bytes()

        try:
            with ThreadPoolExecutor(4) as pool:
                results = dict(pool.map(read, list(module.list_entries())))
        finally:
            module.close()
        assert results == dict(self.produced), "each download must give its own entry's bytes"

    def test_include_and_exclude_filter_by_base_name(self, module_cls: type[BaseModule], tmp_path: Path) -> None:
        module = self._file_source(module_cls, tmp_path, include=["*.csv", "*.txt"], exclude=["empty*"])
        got = fetch_all(module, tmp_path / "work")
        expected = sorted(n for n in self.produced if n.endswith((".csv", ".txt")) and not n.rsplit("/", 1)[-1]
                          .startswith("empty"))
        assert sorted(f.name for f in got) == expected

    def test_a_small_max_file_bytes_rejects_larger_files_and_lands_the_others(self, module_cls: type[BaseModule],
                                                                              tmp_path: Path) -> None:
        ctx = dataclasses.replace(make_context(), max_file_bytes=100)
        got = fetch_all(self._file_source(module_cls, tmp_path, ctx=ctx), tmp_path / "work")
        status = {f.name: f.status if isinstance(f, FetchFailed) else "fetched" for f in got}
        assert status == {n: "rejected" if len(b) > 100 else "fetched" for n, b in self.produced.items()}, status

    def test_incremental_skips_entries_the_last_manifest_holds(self, module_cls: type[BaseModule],
                                                               tmp_path: Path) -> None:
        module = self._file_source(module_cls, tmp_path)
        try:
            entries = list(module.list_entries())
        finally:
            module.close()
        previous = {e.source_uri: dict(e.identity) for e in entries}
        ctx = dataclasses.replace(make_context(), previous=previous)
        got = fetch_all(module_cls(module.source, ctx), tmp_path / "work")  # the same source, not seeded again
        marked = {e.name for e in entries if e.identity}
        assert {f.name for f in got if isinstance(f, Unchanged)} == marked, "every entry with a recorded identity"
        assert {f.name for f in got if isinstance(f, FetchedFile)} == set(self.produced) - marked

    def test_parallel_downloads_stay_within_the_per_host_cap(self, module_cls: type[BaseModule],
                                                             tmp_path: Path) -> None:
        limiters = HostLimiters()
        ctx = dataclasses.replace(make_context(), transfers=4, hosts=JobHosts(limiters, concurrency=2))
        module = self._file_source(module_cls, tmp_path, ctx=ctx)
        workdir = tmp_path / "work"
        workdir.mkdir()
        try:
            entries = list(module.list_entries())
            with ThreadPoolExecutor(4) as pool:
                got = list(pool.map(lambda e: module.fetch_entry(e, workdir), entries))
            host = module.host_for(entries[0])
        finally:
            module.close()
        assert all(isinstance(f, FetchedFile) for f in got), got
        assert 1 <= limiters.get(host).peak <= 2, f"{limiters.get(host).peak} connections to {host} at once"

    # ------------------------------------------------------------------ a run end to end

    def _run_service(self, module_cls: type[BaseModule], tmp_path: Path, raw: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": registered_type(module_cls, ENTRY_POINT_GROUP), "source": raw,
            "validate": self.run_validate(), "on_unchecked": "accept",
            "destination": {"type": "local", "path": str(tmp_path / "landing")},
            "retry": {"attempts": 2, "backoff_s": 0.01, "max_backoff_s": 0.05}, "timeout_s": 30,
        }

    def test_a_run_validates_and_lands_every_file_with_manifest_and_report(self, module_cls: type[BaseModule],
                                                                          tmp_path: Path) -> None:
        """``module-system run`` over the installed type: every file validated and landed (valid or
        rejected) in a local folder, the manifest listing each, the report counting them."""
        seed = tmp_path / "run-source"
        seed.mkdir()
        seeded = self.run_files()
        produced = self.expected_files(seeded)
        service = self._run_service(module_cls, tmp_path, self.make_source(seed, dict(seeded)))
        done = run_cli(tmp_path / "run", {"version": 1, "services": {"contract_service": service}},
                       [{"job_id": "contract_job", "service_id": "contract_service"}])
        assert done.report is not None, f"no report (exit {done.returncode}): {done.stderr.strip()[-2000:]}"
        [job] = done.report["jobs"]
        assert job["status"] == "succeeded", f"{job['status']}: {job.get('error')}"
        rejected = self.expected_rejected & set(produced)
        assert job["files"]["uploaded"] == len(produced) - len(rejected), job["files"]
        assert job["files"]["rejected"] == len(rejected) and job["files"]["failed"] == 0, job["files"]
        assert done.returncode == (1 if rejected else 0), done.stderr.strip()[-2000:]

        landing = tmp_path / "landing"
        manifest = json.loads((landing / manifest_key("contract_service", "contract_job")).read_bytes())
        by_sha = {_sha256(data): name for name, data in produced.items()}
        assert sorted(e["sha256"] for e in manifest["files"]) == sorted(by_sha), "one manifest entry per file"
        for entry in manifest["files"]:
            name = by_sha[entry["sha256"]]
            status = "rejected" if name in rejected else "uploaded"
            assert entry["status"] == status, f"{name}: {entry['status']}, expected {status}"
            assert (landing / entry["key"]).read_bytes() == produced[name], f"{name}: landed bytes differ"
            if status == "rejected":
                assert entry["errors"], f"{name}: rejected without a problem"
                assert (landing / (entry["key"] + ".errors.json")).is_file(), f"{name}: no .errors.json beside it"

    def test_a_misspelt_key_stops_the_run_with_exit_2(self, module_cls: type[BaseModule], tmp_path: Path) -> None:
        """A config mistake in a service of this type reads like the built-ins': one line naming the
        file, the service and the key, exit 2, nothing run."""
        seed = tmp_path / "run-source"
        seed.mkdir()
        raw = {**self.make_source(seed, dict(self.files)), "no_such_key_in_any_module": 1}
        service = self._run_service(module_cls, tmp_path, raw)
        done = run_cli(tmp_path / "run", {"version": 1, "services": {"contract_service": service}},
                       [{"job_id": "contract_job", "service_id": "contract_service"}])
        assert done.returncode == 2, done.stderr
        [line] = done.stderr.strip().splitlines()
        assert line.startswith("error: ") and "project_registry.yaml" in line, line
        assert "service 'contract_service'" in line and "key 'source.no_such_key_in_any_module'" in line, line
        assert not (tmp_path / "landing").exists(), "nothing runs"
