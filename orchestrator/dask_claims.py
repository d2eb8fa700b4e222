"""The run's key claims on the Dask scheduler: one table for every worker of a run.

With ``--executor threads`` the run's :class:`~common.key_claims.KeyClaims` lives in the
one process that runs every job. On a Dask cluster the jobs of one run write from several
processes, so the table lives on the scheduler instead: :class:`ClaimsPlugin` (a scheduler
plugin the client registers, idempotently, when it connects) holds one ``KeyClaims`` per
run and answers the workers' claims over the scheduler's RPC
(:class:`ClusterClaims`, a drop-in for ``KeyClaims`` in a worker's run context). First
claim wins across the whole cluster, exactly as in one process; a claim costs one round
trip to the scheduler.

A job a dead worker was running runs again elsewhere. Each start of a job has its *epoch*,
the scheduler's run id of that execution of the task (increasing:
``orchestrator.dask_worker``), and its claims are made with the attempt number
``epoch * EPOCH + attempt``, so the new run of the job wins the keys the lost one claimed
(as a later source attempt of one job does) and no other job can.

The scheduler must import this module: it runs from the same installation as the client
and the workers (``pip install 'module_system[distributed]'`` everywhere).
"""

from __future__ import annotations

from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin
from distributed.utils import sync

from common.key_claims import KeyClaims, Owner

__all__ = ["EPOCH", "ClaimsPlugin", "ClusterClaims"]

#: Attempts of one job start (epoch) never reach this many.
EPOCH = 1_000_000


class ClaimsPlugin(SchedulerPlugin):
    """Scheduler side: the claims tables of the runs using this scheduler."""

    name = "module_system_claims"
    idempotent = True  # a second run (client) keeps the tables of the runs in progress

    def __init__(self) -> None:
        self._claims: dict[str, KeyClaims] = {}

    async def start(self, scheduler: Any) -> None:
        scheduler.handlers.update({
            "module_system_claim": self.claim,
            "module_system_claim_each": self.claim_each,
            "module_system_forget_run": self.forget_run,
        })

    def claim(self, run_id: str, scope: str, keys: list[str], job_id: str, attempt: int,
              source_uri: str) -> str | None:
        table = self._claims.setdefault(run_id, KeyClaims())
        return table.claim(scope, tuple(keys), Owner(job_id, attempt, source_uri))

    def claim_each(self, run_id: str, scope: str, keys: list[str], job_id: str, attempt: int,
                   source_uri: str) -> list[str | None]:
        table = self._claims.setdefault(run_id, KeyClaims())
        return list(table.claim_each(scope, tuple(keys), Owner(job_id, attempt, source_uri)))

    def forget_run(self, run_id: str) -> None:
        self._claims.pop(run_id, None)


class ClusterClaims:
    """Worker side (a :class:`~common.key_claims.Claims`): the claims of one start (``epoch``)
    of one job, made on the scheduler."""

    def __init__(self, worker: Any, run_id: str, epoch: int) -> None:
        self._worker, self._run_id, self._epoch = worker, run_id, epoch

    def claim(self, bucket: str, keys: tuple[str, ...], owner: Owner) -> str | None:
        answer = sync(self._worker.loop, self._worker.scheduler.module_system_claim, run_id=self._run_id,
                      scope=bucket, keys=list(keys), job_id=owner.job_id,
                      attempt=self._epoch * EPOCH + owner.attempt, source_uri=owner.source_uri)
        return None if answer is None else str(answer)

    def claim_each(self, bucket: str, keys: tuple[str, ...], owner: Owner) -> tuple[str | None, ...]:
        answers = sync(self._worker.loop, self._worker.scheduler.module_system_claim_each, run_id=self._run_id,
                       scope=bucket, keys=list(keys), job_id=owner.job_id,
                       attempt=self._epoch * EPOCH + owner.attempt, source_uri=owner.source_uri)
        return tuple(None if a is None else str(a) for a in answers)
