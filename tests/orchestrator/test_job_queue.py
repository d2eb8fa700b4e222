"""The job queue the workers take from: start order, host caps, set-aside jobs, stop."""

from __future__ import annotations

import threading

from common.config_model import JobSpec
from common.host_limiter import HostLimiters
from orchestrator.job_queue import JobQueue


def jobs(*hosts: str) -> tuple[list[JobSpec], dict[str, tuple[str, ...]]]:
    specs = [JobSpec(f"j{i}", "svc", 5, i, {}, ({},)) for i in range(len(hosts))]
    return specs, {spec.job_id: (host,) for spec, host in zip(specs, hosts)}


def test_jobs_come_in_order_and_a_capped_host_does_not_block_the_others() -> None:
    specs, hosts = jobs("a", "a", "b", "a", "b")
    slots = HostLimiters()
    slots.declare("a", 1)
    queue = JobQueue(specs, hosts, slots, threading.Event())
    first = queue.take()
    assert first is not None and first.job_id == "j0"
    taken = [queue.take(), queue.take()]  # j1 and j3 wait for host a; the b jobs go
    assert [j.job_id for j in taken if j] == ["j2", "j4"]
    queue.done(first)
    assert (nxt := queue.take()) is not None and nxt.job_id == "j1", "a set-aside job goes before any later one"
    queue.done(nxt)
    assert (last := queue.take()) is not None and last.job_id == "j3"
    queue.done(last)
    assert queue.take() is None


def test_a_waiting_worker_wakes_when_a_slot_frees() -> None:
    specs, hosts = jobs("a", "a")
    slots = HostLimiters()
    slots.declare("a", 1)
    queue = JobQueue(specs, hosts, slots, threading.Event())
    first = queue.take()
    got: list[JobSpec | None] = []
    waiter = threading.Thread(target=lambda: got.append(queue.take()))
    waiter.start()
    waiter.join(0.2)
    assert waiter.is_alive() and not got, "host a is at its cap"
    assert first is not None
    queue.done(first)
    waiter.join(5)
    assert [j.job_id for j in got if j] == ["j1"] and slots.in_use("a") == 1


def test_after_a_stop_nothing_is_taken_and_the_rest_drains_in_order() -> None:
    specs, hosts = jobs("a", "a", "b", "c")
    slots = HostLimiters()
    slots.declare("a", 1)
    stop = threading.Event()
    queue = JobQueue(specs, hosts, slots, stop)
    assert [queue.take().job_id, queue.take().job_id] == ["j0", "j2"]  # type: ignore[union-attr]
    stop.set()
    assert queue.take() is None
    assert [j.job_id for j in queue.drain()] == ["j1", "j3"]
