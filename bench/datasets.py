"""The benchmark's datasets, generated once, deterministically, and reused while unchanged.

=====  ===========================================  ========================================
name   full size (``--quick``)                       content
=====  ===========================================  ========================================
A      1,000 CSV files of ~100 KB in 8 folders       typed columns ``id,day,ts,amount,name,
       (80 files)                                    active`` (int, date, datetime, float,
                                                     str, bool); every row valid
B      4 CSV files of ``--big-mb`` MiB (256), one    the same columns, rows from a seeded
       per folder (quick: 16 MiB)                    pool of tails with increasing ids
C      2,000 JSON documents of ~20 KB in 8 folders   an order batch valid against
       (160 files)                                   :data:`ORDER_SCHEMA` (draft 2020-12,
                                                     formats, patterns, closed objects)
=====  ===========================================  ========================================

Each dataset lives in its own folder under the FTP root, named after its shape
(``A_1000x100KB``), beside ``<folder>.manifest.json``: the parameters it was built with
and the size of every file. A folder whose manifest matches the asked-for parameters is
reused as it is; anything else is rebuilt from the seed, so two machines build the same
bytes. File base names are unique within a dataset, whatever their folder.

Two layouts of the same files: the tree (``A_1000x100KB/part00/a_00000.csv``, the split
shape: one job per sub-folder) and, beside it, the flat folder (``A_1000x100KB_flat/
a_00000.csv``, the single-job shape: the folder a user points one job at), made of hard
links to the tree's files (:func:`ensure_flat`), so it costs no disk and holds the same bytes.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from common.config_model import CsvType

__all__ = ["CSV_COLUMNS", "CSV_TYPES", "ORDER_SCHEMA", "Dataset", "DatasetSpec", "ensure", "ensure_flat", "specs"]

SEED = 20261122
#: Bump when the generators change: old folders are rebuilt.
GENERATOR_VERSION = 1
CSV_COLUMNS = ("id", "day", "ts", "amount", "name", "active")
CSV_TYPES: dict[str, CsvType] = {"id": "int", "day": "date", "ts": "datetime", "amount": "float", "name": "str",
                                 "active": "bool"}
_WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet")
_EPOCH = dt.datetime(2020, 1, 1)

ORDER_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "required": ["batch_id", "generated_at", "currency", "records"],
    "properties": {
        "batch_id": {"type": "string", "pattern": "^C-[0-9]{6}$"},
        "generated_at": {"type": "string", "format": "date-time"},
        "currency": {"enum": ["EUR", "USD", "GBP"]},
        "records": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/record"}},
    },
    "$defs": {"record": {
        "type": "object",
        "additionalProperties": False,
        "required": ["id", "sku", "qty", "price", "day", "ok", "tags"],
        "properties": {
            "id": {"type": "integer", "minimum": 0},
            "sku": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{5}$"},
            "qty": {"type": "integer", "minimum": 0, "maximum": 1000},
            "price": {"type": "number", "exclusiveMinimum": 0},
            "day": {"type": "string", "format": "date"},
            "ok": {"type": "boolean"},
            "note": {"type": ["string", "null"], "maxLength": 80},
            "tags": {"type": "array", "items": {"type": "string", "minLength": 1}, "maxItems": 5},
        },
    }},
}


@dataclass(frozen=True)
class DatasetSpec:
    """The shape of one dataset: how many files, of about what size, in how many folders."""

    name: str
    kind: str
    """``csv``, ``bigcsv`` or ``json``."""
    files: int
    file_bytes: int
    folders: int

    @property
    def folder_name(self) -> str:
        size = f"{self.file_bytes >> 20}MB" if self.file_bytes >= 1 << 20 else f"{self.file_bytes // 1000}KB"
        return f"{self.name}_{self.files}x{size}"


@dataclass(frozen=True)
class Dataset:
    """A dataset on disk: its spec, its folder, and every file's size by relative path."""

    spec: DatasetSpec
    root: Path
    sizes: dict[str, int]

    @property
    def total_bytes(self) -> int:
        return sum(self.sizes.values())

    @property
    def subfolders(self) -> list[str]:
        return sorted({rel.split("/", 1)[0] for rel in self.sizes})

    def by_basename(self) -> dict[str, int]:
        return {rel.rsplit("/", 1)[-1]: size for rel, size in self.sizes.items()}

    @property
    def flat_root(self) -> Path:
        """The flat layout's folder (see :func:`ensure_flat`)."""
        return self.root.with_name(self.root.name + "_flat")


def specs(quick: bool, big_mb: int | None) -> dict[str, DatasetSpec]:
    """The three datasets at full size, or the small ``--quick`` ones."""
    big = (big_mb if big_mb is not None else (16 if quick else 256)) << 20
    return {
        "A": DatasetSpec("A", "csv", 80 if quick else 1000, 100_000, 8),
        "B": DatasetSpec("B", "bigcsv", 4, big, 4),
        "C": DatasetSpec("C", "json", 160 if quick else 2000, 20_000, 8),
    }


def ensure(spec: DatasetSpec, ftp_root: Path) -> Dataset:
    """The dataset under ``ftp_root``, built now unless a matching one is already there."""
    folder = ftp_root / spec.folder_name
    manifest_path = ftp_root / f"{spec.folder_name}.manifest.json"
    wanted = {"spec": asdict(spec), "seed": SEED, "generator": GENERATOR_VERSION}
    if manifest_path.exists() and folder.is_dir():
        manifest = json.loads(manifest_path.read_text())
        if {k: manifest.get(k) for k in wanted} == wanted and _intact(folder, manifest["sizes"]):
            return Dataset(spec, folder, manifest["sizes"])
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    sizes: dict[str, int] = {}
    for index, rel in enumerate(_layout(spec)):
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        rng = random.Random(f"{SEED}-{spec.name}-{index}")
        with open(path, "w", encoding="utf-8", newline="") as fh:
            fh.writelines(_content(spec, rng, index))
        sizes[rel] = path.stat().st_size
    manifest_path.write_text(json.dumps({**wanted, "files": len(sizes), "total_bytes": sum(sizes.values()),
                                         "sizes": sizes}, indent=1))
    return Dataset(spec, folder, sizes)


def ensure_flat(data: Dataset) -> Path:
    """The dataset as one flat folder beside its tree: a hard link per file, under its base name.

    Rebuilt unless every link is there and points at the tree's file (same inode).
    """
    flat = data.flat_root
    wanted = {rel.rsplit("/", 1)[-1]: data.root / rel for rel in data.sizes}
    try:
        present = {p.name for p in flat.iterdir()}
        if present == set(wanted) and all((flat / name).stat().st_ino == path.stat().st_ino
                                          for name, path in wanted.items()):
            return flat
    except OSError:
        pass
    shutil.rmtree(flat, ignore_errors=True)
    flat.mkdir(parents=True)
    for name, path in wanted.items():
        os.link(path, flat / name)
    return flat


def _intact(folder: Path, sizes: dict[str, int]) -> bool:
    """Every file of the manifest is there with its size (a cheap check, no hashing)."""
    try:
        return all((folder / rel).stat().st_size == size for rel, size in sizes.items())
    except OSError:
        return False


def _layout(spec: DatasetSpec) -> Iterator[str]:
    """Relative paths: files spread round-robin over ``folders`` sub-folders, unique base names."""
    suffix = ".json" if spec.kind == "json" else ".csv"
    for i in range(spec.files):
        yield f"part{i % spec.folders:02d}/{spec.name.lower()}_{i:05d}{suffix}"


def _content(spec: DatasetSpec, rng: random.Random, index: int) -> Iterator[str]:
    if spec.kind == "json":
        yield _order_document(rng, index, spec.file_bytes)
    elif spec.kind == "csv":
        yield from _csv_rows(rng, spec.file_bytes)
    else:
        yield from _big_csv(rng, spec.file_bytes)


def _csv_tail(rng: random.Random) -> str:
    """Every column after ``id`` of one row."""
    moment = _EPOCH + dt.timedelta(seconds=rng.randrange(5 * 365 * 86400))
    return (f"{moment.date().isoformat()},{moment.isoformat()}Z,{rng.uniform(-1e4, 1e4):.2f},"
            f"{rng.choice(_WORDS)} {rng.randrange(100_000)},{rng.choice(('true', 'false'))}")


def _csv_rows(rng: random.Random, target: int) -> Iterator[str]:
    """A header and rows until about ``target`` bytes."""
    lines = [",".join(CSV_COLUMNS)]
    size = len(lines[0]) + 1
    row = 0
    while size < target:
        line = f"{row},{_csv_tail(rng)}"
        lines.append(line)
        size += len(line) + 1
        row += 1
    yield "\n".join(lines) + "\n"


def _big_csv(rng: random.Random, target: int) -> Iterator[str]:
    """``target`` bytes (at least) of rows, written about 1 MiB at a time: fast enough for GiBs."""
    tails = [_csv_tail(rng) for _ in range(4096)]
    header = ",".join(CSV_COLUMNS) + "\n"
    yield header
    size, row = len(header), 0
    while size < target:
        block = "".join([f"{row + i},{tails[(row + i) & 4095]}\n" for i in range(16384)])
        row += 16384
        if size + len(block) > target:  # end on the last whole row that fits
            block = block[:block.rfind("\n", 0, target - size) + 1] or block[:block.index("\n") + 1]
        size += len(block)
        yield block


def _order_document(rng: random.Random, index: int, target: int) -> str:
    """A JSON order batch of about ``target`` bytes, valid against :data:`ORDER_SCHEMA`."""
    records: list[dict[str, Any]] = []
    doc: dict[str, Any] = {"batch_id": f"C-{index:06d}", "currency": rng.choice(["EUR", "USD", "GBP"]),
                           "generated_at": (_EPOCH + dt.timedelta(minutes=index)).isoformat() + "Z",
                           "records": records}
    size = 120
    while size < target:
        record = {
            "id": index * 1000 + len(records),
            "sku": "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(3)) + f"-{rng.randrange(100_000):05d}",
            "qty": rng.randrange(1001), "price": round(rng.uniform(0.01, 999.0), 2),
            "day": (_EPOCH.date() + dt.timedelta(days=rng.randrange(1800))).isoformat(), "ok": rng.random() < 0.9,
            "note": rng.choice([None, f"{rng.choice(_WORDS)} order"]),
            "tags": rng.sample(_WORDS, rng.randrange(4)),
        }
        records.append(record)
        size += len(json.dumps(record)) + 2
    return json.dumps(doc, indent=None)
