"""Medians, ratios and targets of a benchmark run: the printed table and the JSON results.

Ratios are throughput ratios taken within one repeat (the same servers, the same
minute), ``reference.wall / module_system.wall`` for the same files (or pages), and then
the median over repeats: above 1 means module_system was faster. The references are the
other tools of a row (:data:`REFERENCES`: rclone, the raw probe, Scrapy, the requests pool).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.measure import Sample

__all__ = ["Target", "evaluate_targets", "print_table", "summarise", "write_results"]

CLIENT_ORDER = ("module_system", "ms_local", "ms_sqlite", "dlt_sqlite", "ms_postgres", "dlt_postgres", "ms_split", "rclone", "raw", "scrapy", "requests_pool", "ms_page_10mb",
                "ms_page_small", "ms_rerun_same", "ms_rerun_incremental", "ms_no_validate", "ms_switch_1ms")
#: The other tools a module_system run is compared with, in the same repeat.
REFERENCES = ("rclone", "raw", "scrapy", "requests_pool", "dlt_sqlite", "dlt_postgres")
#: module_system runs that move the data (compared with every reference of their row).
TRANSFERS = ("module_system", "ms_local", "ms_sqlite", "ms_postgres", "ms_split", "ms_no_validate", "ms_switch_1ms")
ROW_ORDER = ("A", "B", "C", "S3", "WEB", "API", "SCALE", "SQL", "noop")


def _median(values: Iterable[float]) -> float | None:
    data = list(values)
    return statistics.median(data) if data else None


def _by(samples: list[Sample], dataset: str, client: str) -> dict[int, Sample]:
    return {s.repeat: s for s in samples if s.dataset == dataset and s.client == client}


def _ratios(samples: list[Sample], dataset: str, num: str, den: str) -> list[float]:
    """Per repeat, in repeat order, ``wall(den) / wall(num)``: how many times faster ``num`` was."""
    a, b = _by(samples, dataset, num), _by(samples, dataset, den)
    return [round(b[r].wall_s / a[r].wall_s, 3) for r in sorted(a) if r in b and a[r].wall_s > 0]


def summarise(samples: list[Sample]) -> list[dict[str, Any]]:
    """One row of medians per (dataset, client), in a stable order."""
    rows = []
    keys = sorted({(s.dataset, s.client) for s in samples},
                  key=lambda k: (ROW_ORDER.index(k[0]) if k[0] in ROW_ORDER else 99, k[0],
                                 CLIENT_ORDER.index(k[1]) if k[1] in CLIENT_ORDER else 99, k[1]))
    present = {(s.dataset, s.client) for s in samples}
    for dataset, client in keys:
        group = [s for s in samples if s.dataset == dataset and s.client == client]
        row: dict[str, Any] = {
            "dataset": dataset, "client": client, "runs": len(group), "all_ok": all(s.ok for s in group),
            "files": group[0].files, "mb": round(group[0].bytes / 1e6, 1),
            "wall_s": _median(s.wall_s for s in group), "mb_s": _median(s.mb_s for s in group),
            "files_s": _median(s.files_s for s in group), "peak_rss_mb": _median(s.peak_rss_mb for s in group),
            "max_peak_rss_mb": max(s.peak_rss_mb for s in group), "cpu_s": _median(s.cpu_s for s in group),
            "s3_cpu_s": _median(s.s3_cpu_s for s in group),
            "source_cpu_s": _median(s.source_cpu_s for s in group),
            "other_cpu_s": _median(s.other_cpu_s for s in group),
            "wall_s_each": [s.wall_s for s in sorted(group, key=lambda s: s.repeat)],
            "peak_rss_mb_each": [s.peak_rss_mb for s in sorted(group, key=lambda s: s.repeat)],
        }
        against = {f"vs_{ref}": ref for ref in REFERENCES if client in TRANSFERS and (dataset, ref) in present}
        if client.startswith("ms_rerun"):
            against["vs_first_run"] = "module_system"
        for key, other in against.items():
            each = _ratios(samples, dataset, client, other)
            row[key], row[f"{key}_each"] = _median(each), each
        for key in sorted({k for s in group for k, v in s.extra.items() if isinstance(v, (int, float))}):
            values = [s.extra[key] for s in sorted(group, key=lambda s: s.repeat) if key in s.extra]
            row.setdefault(key, _median(values))
            row[f"{key}_each"] = values
        if client.startswith("noop") and client != "noop_1":
            for key in ("ms_per_job", "ms_per_job_minus_startup", "client_cpu_ms_per_job", "s3_server_cpu_ms_per_job",
                        "probe_ms_per_put", "probe_cpu_ms_per_put", "overhead_ms_per_job"):
                row[key] = _median(s.extra[key] for s in group if key in s.extra)
        rows.append(row)
    return rows


@dataclass(frozen=True)
class Target:
    """A goal of the issue, measured in every repeat; met only when every repeat meets it."""

    name: str
    each: tuple[float, ...]
    goal: float
    higher_is_better: bool = True
    unit: str = "x"

    @property
    def measured(self) -> float | None:
        """The median over repeats (the worst for an upper bound such as peak RSS)."""
        if not self.each:
            return None
        return statistics.median(self.each) if self.higher_is_better else max(self.each)

    def holds(self, value: float) -> bool:
        return value >= self.goal if self.higher_is_better else value <= self.goal

    @property
    def verdict(self) -> str:
        if not self.each:
            return "not measured"
        met = sum(self.holds(v) for v in self.each)
        return f"{'MET' if met == len(self.each) else 'MISSED'} in {met} of {len(self.each)}"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "measured": self.measured, "each": list(self.each), "goal": self.goal,
                "higher_is_better": self.higher_is_better, "unit": self.unit, "verdict": self.verdict}


def evaluate_targets(rows: list[dict[str, Any]], noop_ms_per_job: float | None) -> list[Target]:
    """The targets of issue 11 (single-job shape and the other source types), then the earlier ones."""
    def each(dataset: str, client: str, key: str) -> tuple[float, ...]:
        for row in rows:
            if row["dataset"] == dataset and row["client"] == client:
                return tuple(row.get(f"{key}_each", ()))
        return ()

    upper = {"higher_is_better": False}
    return [
        Target("A, one job: vs rclone", each("A", "module_system", "vs_rclone"), 1.3),
        Target("A, one job: vs raw probe", each("A", "module_system", "vs_raw"), 0.9),
        Target("B, one job: vs rclone", each("B", "module_system", "vs_rclone"), 1.3),
        Target("B, one job: peak RSS", each("B", "module_system", "peak_rss_mb"), 150, unit="MB", **upper),
        Target("C, one job: vs rclone", each("C", "module_system", "vs_rclone"), 1.3),
        Target("S3 -> S3, one job: vs rclone copy", each("S3", "module_system", "vs_rclone"), 1.3),
        Target("web, one job, 16 in flight: pages/s vs Scrapy", each("WEB", "module_system", "vs_scrapy"), 1.0),
        Target("web, landing in a local folder as Scrapy does: pages/s vs Scrapy",
               each("WEB", "ms_local", "vs_scrapy"), 1.0),
        Target("web: peak RSS of a job crawling one 10 MB page", each("WEB", "ms_page_10mb", "peak_rss_mb"), 200,
               unit="MB", **upper),
        Target("api, one job, 16 in flight: vs requests thread pool",
               each("API", "module_system", "vs_requests_pool"), 0.9),
        Target("api, landing in a local folder as the pool does: vs requests thread pool",
               each("API", "ms_local", "vs_requests_pool"), 0.9),
        Target("scale, 100,000 files, one job: peak RSS", each("SCALE", "module_system", "peak_rss_mb"), 300,
               unit="MB", **upper),
        Target("scale: files/s last tenth / first tenth", each("SCALE", "module_system", "tenth_ratio"), 0.8),
        Target("sql: A's rows into SQLite, rows/s vs dlt", each("SQL", "ms_sqlite", "vs_dlt_sqlite"), 1.5),
        Target("sql: A's rows into PostgreSQL, rows/s vs dlt", each("SQL", "ms_postgres", "vs_dlt_postgres"), 1.5),
        Target("A, split shape: vs rclone (earlier goal)", each("A", "ms_split", "vs_rclone"), 1.2),
        Target("A, split shape: vs raw probe (earlier goal)", each("A", "ms_split", "vs_raw"), 0.85),
        Target("B, split shape: vs rclone (earlier goal)", each("B", "ms_split", "vs_rclone"), 1.0),
        Target("C, split shape: vs rclone (earlier goal)", each("C", "ms_split", "vs_rclone"), 1.2),
        Target("A re-run, incremental (nothing downloaded): speed-up",
               each("A", "ms_rerun_incremental", "vs_first_run"), 5),
        Target("no-op jobs: framework overhead per job (wall minus a plain PUT)",
               () if noop_ms_per_job is None else (noop_ms_per_job,), 1.0, unit="ms", **upper),
    ]


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _ratio_text(row: dict[str, Any]) -> str:
    """``rclone 1.37 raw 0.95``: the row's ratios against each reference (and a re-run's speed-up)."""
    parts = [f"{ref} {row[f'vs_{ref}']:.2f}" for ref in REFERENCES if row.get(f"vs_{ref}") is not None]
    if row.get("vs_first_run") is not None:
        parts.append(f"1st run {row['vs_first_run']:.1f}")
    return ", ".join(parts)


def print_table(rows: list[dict[str, Any]], targets: list[Target]) -> None:
    header = (f"{'set':<6}{'client':<21}{'files':>7}{'MB':>9}{'wall s':>9}{'MB/s':>8}{'files/s':>9}{'RSS MB':>8}"
              f"{'CPU s':>8}{'S3 CPU':>8}{'src CPU':>8}{'other':>7}  ok  ratios (>1: module_system faster)")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['dataset']:<6}{r['client']:<21}{r['files']:>7}{r['mb']:>9.1f}{_fmt(r['wall_s'], '.2f'):>9}"
              f"{_fmt(r['mb_s'], '.1f'):>8}{_fmt(r['files_s'], '.1f'):>9}{_fmt(r['peak_rss_mb'], '.0f'):>8}"
              f"{_fmt(r['cpu_s'], '.1f'):>8}{_fmt(r['s3_cpu_s'], '.1f'):>8}{_fmt(r['source_cpu_s'], '.1f'):>8}"
              f"{_fmt(r['other_cpu_s'], '.1f'):>7}  {'yes' if r['all_ok'] else 'NO ':<4}{_ratio_text(r)}")
        if "ms_per_job" in r:
            print(f"{'':<11}-> per job: {_fmt(r['ms_per_job'], '.2f')} ms wall, "
                  f"{_fmt(r['ms_per_job_minus_startup'], '.2f')} ms without start-up; CPU: client "
                  f"{_fmt(r['client_cpu_ms_per_job'], '.2f')} ms, S3 server {_fmt(r['s3_server_cpu_ms_per_job'], '.2f')} ms")
        if "tenth_ratio" in r:
            print(f"{'':<11}-> files/s first tenth {_fmt(r['first_tenth_files_s'], '.0f')}, last tenth "
                  f"{_fmt(r['last_tenth_files_s'], '.0f')}: last / first {_fmt(r['tenth_ratio'], '.2f')} "
                  f"(each {r['tenth_ratio_each']})")
    print("\nwall/CPU: medians; RSS: peak resident set of the client process; S3 CPU / src CPU: the S3 server's and "
          "the row's source server's (FTP, web site, API) CPU seconds during the run;\nother: CPU seconds used "
          "meanwhile by anything else on the machine (noise);\nratios: wall(reference) / wall(module_system) within "
          "each repeat, median; 1st run: a re-run's speed-up over the first run.\nmodule_system is the single-job "
          "shape (one job, one flat folder, service defaults); ms_split one job per sub-folder, cap raised.")
    print("\ntargets (each repeat against the goal; the value shown is the median, or the maximum for an upper bound):")
    for t in targets:
        measured = "-" if t.measured is None else f"{t.measured:.2f} {t.unit}"
        sign = ">=" if t.higher_is_better else "<="
        each = f"  [{', '.join(f'{v:.2f}' for v in t.each)}]" if len(t.each) > 1 else ""
        print(f"  {t.name:<62} {measured:>10}  (goal {sign} {t.goal:g} {t.unit})  {t.verdict}{each}")
    print("  (the skipped_same re-run is shown in the table, not a target: it downloads and validates every file again)")


def write_results(path: Path, meta: dict[str, Any], samples: list[Sample], rows: list[dict[str, Any]],
                  targets: list[Target]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"meta": meta, "summary": rows, "targets": [t.to_dict() for t in targets],
                "samples": [s.to_dict() for s in samples]}
    path.write_text(json.dumps(document, indent=1))
