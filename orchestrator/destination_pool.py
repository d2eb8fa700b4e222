"""The run's destinations: one instance per distinct configuration, shared by its jobs.

Services whose destination configs give the same :meth:`Destination.share_key` (for ``s3``:
the client settings and the bucket) share one instance, hence one client and connection
pool; it is made on first use and closed when the run ends.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable
from pathlib import Path

from common.config_model import DestinationSpec
from common.interfaces.destination import Destination, DestinationSetup
from common.plugins import ModuleCatalog, default_destinations

__all__ = ["DestinationPool"]


class DestinationPool:
    """``workers``: uploads that may be in flight at once (pools are sized to it); ``state_dir``:
    ``<state-dir>/uploads``; ``base_dir``: the registry's folder."""

    def __init__(self, workers: int, state_dir: Path, base_dir: Path, catalog: ModuleCatalog | None = None) -> None:
        self.workers, self.state_dir, self.base_dir = workers, state_dir, base_dir
        self.catalog = catalog or default_destinations()
        self._opened: dict[Hashable, Destination] = {}
        self._lock = threading.Lock()
        self._shared: dict[Hashable, object] = {}
        self._shared_lock = threading.Lock()

    def get(self, spec: DestinationSpec, timeout_s: float) -> Destination:
        cls = self.catalog.load(spec.type)
        key = cls.share_key(spec.config)
        with self._lock:
            dest = self._opened.get(key)
            if dest is None:
                setup = DestinationSetup(workers=self.workers, timeout_s=timeout_s, state_dir=self.state_dir,
                                         base_dir=self.base_dir, shared=self._shared, lock=self._shared_lock)
                dest = self._opened[key] = cls(spec.config, setup)
            return dest

    def close(self) -> None:
        with self._lock:
            opened, self._opened = list(self._opened.values()), {}
        for dest in opened:
            dest.close()
