"""A job's entries per source attempt: the last attempt is the result, earlier landings stay listed."""

from __future__ import annotations

from common.manifest import ManifestEntry
from orchestrator.job_entries import JobEntries


def entry(uri: str, key: str | None, status: str = "uploaded", size: int = 1) -> ManifestEntry:
    return ManifestEntry(uri, key, size, "0" * 64, status)  # type: ignore[arg-type]


def test_the_last_attempt_is_the_result_and_earlier_landings_are_abandoned() -> None:
    entries = JobEntries()
    assert entries.new_attempt() == 1
    entries.add(entry("p/a", "v/a.csv"))
    entries.add(entry("p/old", "v/old.csv"))
    entries.add(entry("p/b", None, "failed"))
    assert entries.new_attempt() == 2
    entries.add(entry("m/a", "v/a.csv", "skipped_same"))
    entries.add(entry("m/b", "v/b.csv", size=5))
    assert [e.source_uri for e in entries.files] == ["m/a", "m/b"]
    assert entries.counts()["failed"] == 0 and entries.counts()["uploaded"] == 1
    assert entries.uploaded_bytes() == 5
    assert [e.source_uri for e in entries.abandoned()] == ["p/old"], "a.csv is accounted for by the last attempt"


def test_source_uris_are_seen_per_attempt() -> None:
    entries = JobEntries()
    entries.new_attempt()
    entries.add(entry("u", "k"))
    assert not entries.first_sight("u")
    entries.new_attempt()
    assert entries.first_sight("u")
    assert not entries.first_sight("u")


def test_files_keep_the_source_order_whatever_order_they_finished_in() -> None:
    entries = JobEntries()
    entries.new_attempt()
    for order, uri in ((2, "c"), (0, "a"), (1, "b")):
        entries.add(entry(uri, f"v/{uri}"), order)
    assert [e.source_uri for e in entries.files] == ["a", "b", "c"]
