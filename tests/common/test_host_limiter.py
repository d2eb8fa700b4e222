"""The per-host limiter: a fair connection cap, evenly spaced starts, a politeness delay."""

from __future__ import annotations

import threading
import time

import pytest

from common.exceptions import TransferStopped
from common.host_limiter import HostLimiter, HostLimiters, JobHosts, host_of


def run_threads(n: int, target: object) -> None:
    threads = [threading.Thread(target=target) for _ in range(n)]  # type: ignore[arg-type]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)


def test_host_keys_are_scheme_host_and_explicit_port() -> None:
    assert host_of("HTTP://Example.org/a?b") == "http://example.org:80"
    assert host_of("https://h:8443/x") == "https://h:8443"
    assert host_of("ftp://127.0.0.1") == "ftp://127.0.0.1:21"
    assert host_of("127.0.0.1:8000") == "127.0.0.1:8000"


def test_the_cap_holds_across_threads_and_the_strictest_declaration_wins() -> None:
    limiters = HostLimiters()
    limiters.declare("http://h:1", concurrency=5)
    limiters.declare("http://h:1/other", concurrency=3)
    limiter = limiters.get("http://h:1")
    active, peak, lock = [0], [0], threading.Lock()

    def work() -> None:
        for _ in range(20):
            limiter.acquire()
            with lock:
                active[0] += 1
                peak[0] = max(peak[0], active[0])
            time.sleep(0.001)
            with lock:
                active[0] -= 1
            limiter.release()

    run_threads(8, work)
    assert peak[0] == 3 and limiter.peak == 3 and limiter.in_use == 0


def test_waiters_are_served_first_come_first_served() -> None:
    limiter = HostLimiter("h")
    limiter.tighten(concurrency=1)
    limiter.acquire()
    served: list[int] = []

    def waiter(i: int) -> None:
        limiter.acquire()
        served.append(i)
        limiter.release()

    threads = []
    for i in range(5):
        t = threading.Thread(target=waiter, args=(i,))
        t.start()
        threads.append(t)
        while len(limiter._waiting) < i + 1:  # each in the queue before the next comes
            time.sleep(0.001)
    assert not limiter.try_acquire(), "nobody jumps the queue"
    limiter.release()
    for t in threads:
        t.join(5)
    assert served == [0, 1, 2, 3, 4]


def test_starts_are_spaced_by_rate_and_delay_across_threads() -> None:
    limiter = HostLimiter("h")
    limiter.tighten(requests_per_s=100, delay_s=0.02)  # the delay is the longer gap
    starts: list[float] = []
    lock = threading.Lock()

    def work() -> None:
        for _ in range(5):
            limiter.pace()
            with lock:
                starts.append(time.monotonic())

    run_threads(4, work)
    starts.sort()
    assert len(starts) == 20
    first = starts[0]
    late = [k for k, t in enumerate(starts) if t < first + k * 0.02 - 0.002]
    assert not late, f"starts earlier than k * delay after the first: {late}"


def test_waiting_ends_when_the_run_stops() -> None:
    stop = threading.Event()
    limiter = HostLimiter("h", stop)
    limiter.tighten(concurrency=1, requests_per_s=0.001)
    limiter.acquire()
    stop.set()
    with pytest.raises(TransferStopped):
        limiter.acquire()
    limiter.pace()
    limiter.pace()  # the second start is 1000 s away: only the stop lets this return


def test_a_job_uses_its_admission_slot_first_then_waits_for_its_own() -> None:
    limiters = HostLimiters()
    limiters.declare("ftp://h:21", concurrency=2)
    assert limiters.try_acquire(["ftp://h:21"])  # the executor admits the job
    job = JobHosts(limiters, admitted=["ftp://h:21"])
    with job.slot("ftp://h:21"):
        assert limiters.in_use("ftp://h:21") == 1, "the first request rides on the admission slot"
        with job.slot("ftp://h:21"):
            assert limiters.in_use("ftp://h:21") == 2
        assert not limiters.available(["ftp://h:21"]) or limiters.in_use("ftp://h:21") == 1
    limiters.release(["ftp://h:21"])
    assert limiters.in_use("ftp://h:21") == 0


def test_a_job_declares_its_service_rules_on_hosts_it_finds() -> None:
    limiters = HostLimiters()
    job = JobHosts(limiters, concurrency=2, delay_s=0.5)
    with job.slot("http://found.example/page"):
        pass
    limiter = limiters.get("http://found.example:80")
    assert limiter.concurrency == 2 and limiter.delay_s == 0.5


def test_jobs_holding_every_slot_of_a_host_still_finish_their_parallel_lanes() -> None:
    """Two jobs admitted on a host capped at 2 hold both slots; each runs 4 lanes. A lane that
    waited for the limiter alone would wait for ever (each job waits for its lanes before it
    gives its slot back): the job's own slot, when it comes free, ends the wait."""
    limiters = HostLimiters()
    limiters.declare("ftp://h:21", concurrency=2)
    jobs = []
    for _ in range(2):
        assert limiters.try_acquire(["ftp://h:21"])
        jobs.append(JobHosts(limiters, admitted=["ftp://h:21"]))
    done: list[int] = []
    lock = threading.Lock()

    def lane(job: JobHosts) -> None:
        for _ in range(5):
            with job.slot("ftp://h:21"):
                time.sleep(0.002)
                assert limiters.in_use("ftp://h:21") <= 2
        with lock:
            done.append(1)

    threads = [threading.Thread(target=lane, args=(job,), daemon=True) for job in jobs for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert len(done) == 8, "every lane finished"
