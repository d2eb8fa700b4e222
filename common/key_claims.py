"""Which job and source own which destination key in a run.

Every key a job writes (a file, an errors document) or deletes (a stale copy), and every
key its manifest says a file landed under, is claimed first, here: ``(bucket, key)`` ->
the :class:`Owner` (job, source attempt, source URI). The first claim wins. A claim is
granted again to the same owner, and to a later attempt of the same job (a job-level retry
or a fallback source replaces the attempt before it). It is refused to another job, and to
another source URI of the same attempt: then that file is not written and is recorded
``failed`` with the reason :meth:`KeyClaims.claim` returns, naming the other owner. A key
longer than S3 allows is refused the same way.

So within a run no key is written for two sources, and no manifest claims a key another
one claims. Names are already made distinct (``common/safe_names.key_name``), so a refusal
within one job means an engineered collision; between jobs it means their destination
prefixes overlap (give each job its own, e.g. with ``{job_id}``). See docs/KEYS.md.

The table lives as long as the run (held by ``RunContext``); it does not know what other
runs or tools write. When the run's jobs run on a Dask cluster, the table lives on the
scheduler and the workers claim through it (``orchestrator/dask_claims.py``), so the rule
holds across worker processes.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Protocol

__all__ = ["MAX_KEY_BYTES", "Claims", "KeyClaims", "Owner"]

#: The longest key S3 accepts, in bytes of UTF-8.
MAX_KEY_BYTES = 1024


@dataclass(frozen=True, slots=True)
class Owner:
    job_id: str
    attempt: int
    """The job's source attempt (1, 2, ... over retries and fallbacks)."""
    source_uri: str


class Claims(Protocol):
    """What a job asks of its run's claims: this table, or the scheduler's on a Dask cluster
    (``orchestrator.dask_claims``), which holds one ``KeyClaims`` for the workers of a run."""

    def claim(self, bucket: str, keys: tuple[str, ...], owner: Owner) -> str | None: ...

    def claim_each(self, bucket: str, keys: tuple[str, ...], owner: Owner) -> tuple[str | None, ...]: ...


class KeyClaims:
    """The run's claims table. Thread-safe."""

    def __init__(self) -> None:
        self._owners: dict[str, dict[str, Owner]] = {}
        """bucket -> key -> owner (one dict per bucket: no ``(bucket, key)`` tuple kept per key)."""
        self._lock = threading.Lock()

    def claim(self, bucket: str, keys: tuple[str, ...], owner: Owner) -> str | None:
        """Claim every one of ``keys`` for ``owner``, or none: None when granted, else why not.

        Also refused: a key longer than S3 allows (:data:`MAX_KEY_BYTES` in UTF-8).
        """
        for key in keys:
            size = len(key.encode("utf-8", "surrogatepass"))
            if size > MAX_KEY_BYTES:
                return f"key {key[:60]}... is {size} bytes, over the {MAX_KEY_BYTES} an S3 key may have"
        with self._lock:
            owners = self._owners.setdefault(bucket, {})
            conflict = next(((key, held) for key in keys
                             if (held := owners.get(key)) is not None and not _may_take(held, owner)),
                            None)
            if conflict is None:
                for key in keys:
                    if owners.get(key) != owner:  # the same owner again keeps the object it has
                        owners[key] = owner
                return None
        key, held = conflict
        if held.job_id != owner.job_id:
            return (f"key {key} is already used in this run by job {held.job_id} (from {held.source_uri}); "
                    f"give each job its own destination.prefix, e.g. with {{job_id}}")
        return f"key {key} is already used in this run by {held.source_uri}"

    def claim_each(self, bucket: str, keys: tuple[str, ...], owner: Owner) -> tuple[str | None, ...]:
        """:meth:`claim` of each key on its own (one answer per key): a file's stale copies, each
        removed only if it is ours."""
        return tuple(self.claim(bucket, (key,), owner) for key in keys)

    def owner(self, bucket: str, key: str) -> Owner | None:
        with self._lock:
            return self._owners.get(bucket, {}).get(key)


def _may_take(held: Owner, owner: Owner) -> bool:
    """The same owner again, or a later attempt of the same job."""
    return held == owner or (held.job_id == owner.job_id and held.attempt < owner.attempt)
