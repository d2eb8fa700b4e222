"""The request pacer hands out evenly spaced slots, across threads."""

from __future__ import annotations

import threading

from common.rate_limit import RatePacer


def test_slots_are_spaced_by_the_interval_across_threads() -> None:
    pacer = RatePacer(requests_per_s=50)
    slots: list[float] = []
    lock = threading.Lock()

    def take() -> None:
        for _ in range(25):
            slot = pacer.reserve()
            with lock:
                slots.append(slot)

    threads = [threading.Thread(target=take) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    slots.sort()
    gaps = [b - a for a, b in zip(slots, slots[1:])]
    assert len(slots) == 100
    assert min(gaps) >= 0.02 - 1e-9


def test_wait_returns_at_once_when_the_run_stops() -> None:
    stop = threading.Event()
    stop.set()
    pacer = RatePacer(requests_per_s=0.001, stop=stop)
    pacer.wait()
    pacer.wait()  # the second slot is 1000 s away: only the stop event lets this return
