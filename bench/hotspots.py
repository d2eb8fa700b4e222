"""Where a profiled run spent its time, from py-spy's folded stacks.

    py-spy record --format raw -o prof.txt -- python -m orchestrator.cli_init ...
    python -m bench.hotspots prof.txt

py-spy samples every thread from outside the process and by default leaves out idle
ones (blocked in a socket read, a lock, a sleep), so the counts are where threads were
*running*. Three views: the share of each stage (the deepest frame on the stack that
belongs to a known stage; any stack still importing counts as ``imports``), the
functions holding the most samples themselves, and the functions on the most stacks.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

__all__ = ["STAGES", "parse", "summary"]

#: (stage, substrings of a frame): the deepest frame matching one decides a sample's stage.
STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("validate: CSV checker", ("csv_checker.py",)),
    ("validate: JSON Schema", ("json_checker.py", "jsonschema/", "referencing/", "rpds")),
    ("logging (structlog, logging, JSON lines)", ("structlog/", "logging/__init__.py", "common/logger.py")),
    ("hash + write fetched file (FileSink)", ("file_sink.py",)),
    ("FTP client (ftplib, listing, downloads)", ("ftplib.py", "ftp_module/")),
    ("S3 client (boto3, botocore, s3transfer, http)", ("botocore/", "boto3/", "s3transfer/", "urllib3/",
                                                       "http/client.py", "multipart_upload.py")),
    ("uploader + manifest (common/s3_uploader, manifest)", ("s3_uploader.py", "manifest.py")),
    ("config load (registry, batch, schemas)", ("job_config.py", "config_model.py")),
    ("executor + runner (orchestrator)", ("orchestrator/",)),
    ("threads, queues, futures (stdlib)", ("threading.py", "concurrent/futures", "queue.py")),
)
_LINE = re.compile(r"^(.*) (\d+)$")
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")


def parse(path: Path) -> list[tuple[list[str], int]]:
    """(frames from root to leaf, samples) per line of a py-spy ``--format raw`` file."""
    stacks = []
    for line in path.read_text(errors="replace").splitlines():
        match = _LINE.match(line.strip())
        if match:
            stacks.append((match.group(1).split(";"), int(match.group(2))))
    return stacks


def _function(frame: str) -> str:
    """``func (file)`` without the line number."""
    match = _FRAME.match(frame)
    return f"{match.group('func')} ({match.group('file')})" if match else frame


def _stage(frames: list[str]) -> str:
    if any(f.startswith(("_find_and_load ", "_load_unlocked ")) for f in frames):
        return "imports (interpreter start-up)"
    if any("job_config.py" in f for f in frames):  # its JSON Schema checks are config, not file validation
        return "config load (registry, batch, schemas)"
    for frame in reversed(frames):
        for stage, needles in STAGES:
            if any(n in frame for n in needles):
                return stage
    return "other"


def summary(path: Path, top: int = 15) -> dict[str, list[tuple[str, int, float]]]:
    """``stages``, ``self`` and ``inclusive``: lists of (name, samples, percent of all samples)."""
    stacks = parse(path)
    total = sum(n for _, n in stacks) or 1
    stages: Counter[str] = Counter()
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for frames, n in stacks:
        stages[_stage(frames)] += n
        own[_function(frames[-1])] += n
        for name in {_function(f) for f in frames}:
            inclusive[name] += n

    def listed(counter: Counter[str], limit: int | None) -> list[tuple[str, int, float]]:
        return [(name, n, 100.0 * n / total) for name, n in counter.most_common(limit)]

    return {"stages": listed(stages, None), "self": listed(own, top), "inclusive": listed(inclusive, top),
            "total": [("samples", total, 100.0)]}


def print_summary(path: Path, top: int = 15) -> dict[str, list[tuple[str, int, float]]]:
    result = summary(path, top)
    print(f"profile {path}: {result['total'][0][1]} samples of running threads")
    for title, key in (("by stage", "stages"), ("self time (leaf function)", "self"),
                       ("inclusive (on the stack)", "inclusive")):
        print(f"  {title}:")
        for name, n, pct in result[key]:
            print(f"    {pct:5.1f}%  {n:>7}  {name[:120]}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("raw_file", type=Path, help="py-spy record --format raw output")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    print_summary(args.raw_file, args.top)


if __name__ == "__main__":
    main()
