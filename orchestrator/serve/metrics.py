"""``/metrics`` of ``serve``: the runs it started, summed, in Prometheus' text format.

Each run the server starts has its own :class:`~orchestrator.run_metrics.RunMetrics` (the same
observer ``run --metrics-port`` serves). :class:`ServeMetrics` adds them up when scraped: the
counters and histograms over every run since the server started (so a counter never goes
down), the gauges (queue depth, busy workers, host slots, ``run_info``) of the runs in
progress only. After one run, the counters equal that run's report ``totals``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from orchestrator.run_metrics import RunMetrics

__all__ = ["ServeMetrics"]


class ServeMetrics(Collector):
    """Every served run's metrics, merged sample by sample (see the module docstring)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._runs: list[tuple[RunMetrics, Callable[[], bool]]] = []
        self._lock = threading.Lock()
        self.registry.register(self)
        self.add(RunMetrics(), lambda: False)  # every counter at 0 before the first run

    def add(self, metrics: RunMetrics, in_progress: Callable[[], bool]) -> None:
        with self._lock:
            self._runs.append((metrics, in_progress))

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            runs = list(self._runs)
        families: dict[str, Metric] = {}
        values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
        for metrics, in_progress in runs:
            live = in_progress()
            for family in metrics.registry.collect():
                if family.type in ("gauge", "info") and not live:
                    continue
                if family.name not in families:
                    families[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
                    values[family.name] = {}
                merged = values[family.name]
                for sample in family.samples:
                    key = (sample.name, tuple(sorted(sample.labels.items())))
                    if sample.name.endswith("_created"):  # when the first run's series began
                        merged[key] = min(merged.get(key, sample.value), sample.value)
                    else:
                        merged[key] = merged.get(key, 0.0) + sample.value
        for name, family in families.items():
            for (sample_name, labels), value in values[name].items():
                family.add_sample(sample_name, dict(labels), value)
            yield family
