"""A manifest entry's JSON form: every field, errors and identity as plain JSON values."""

from __future__ import annotations

import json
from dataclasses import fields

from common.manifest import DestinationOutcome, ManifestEntry
from common.problems import Problem


def test_to_dict_carries_every_field_as_json() -> None:
    entry = ManifestEntry("ftp://h:21/out/a.csv", "in/a.csv", 12, "ab" * 32, "rejected",
                          (Problem("bad value", "row 3, column 'amount'"),), {"size": "12", "modify": "20261122"})
    out = entry.to_dict()
    optional = ("unchecked", "destinations")  # written only when set
    assert list(out) == [f.name for f in fields(ManifestEntry) if f.name not in optional]
    unchecked = ManifestEntry("ftp://h:21/out/a.csv.gz", "out/a.csv.gz", 1, "ab" * 32, "uploaded", unchecked=True,
                              destinations=(DestinationOutcome("s3", "uploaded", "out/a.csv.gz"),
                                            DestinationOutcome("db", "failed", None, "database down")))
    assert list(unchecked.to_dict()) == [f.name for f in fields(ManifestEntry)]
    assert unchecked.to_dict()["destinations"] == {"s3": {"status": "uploaded", "key": "out/a.csv.gz"},
                                                   "db": {"status": "failed", "error": "database down"}}
    assert unchecked.to_dict()["unchecked"] is True
    assert out["errors"] == [{"location": "row 3, column 'amount'", "message": "bad value"}]
    assert out["identity"] == {"size": "12", "modify": "20261122"}
    assert json.loads(json.dumps(out)) == out
