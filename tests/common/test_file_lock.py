"""FileLock: exclusive between processes (and between open files of one process), dropped when its holder dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from common.file_lock import FileLock

HOLD = """
import sys
from pathlib import Path
from common.file_lock import FileLock
assert FileLock(Path(sys.argv[1])).try_acquire()
print("held", flush=True)
sys.stdin.readline()
"""


def test_a_held_lock_excludes_others_until_released_and_its_file_goes_with_it(tmp_path: Path) -> None:
    path = tmp_path / "k.lock"
    first, second = FileLock(path), FileLock(path)
    assert first.try_acquire()
    assert not second.try_acquire()
    got = threading.Event()
    waiter = threading.Thread(target=lambda: second.acquire() and got.set())
    waiter.start()
    assert not got.wait(0.2)
    first.release(unlink=True)
    waiter.join(10)
    assert got.is_set() and second.held
    assert path.exists(), "the waiter holds the file now at the path, not the removed one"
    assert not FileLock(path).try_acquire()
    second.release(unlink=True)
    assert not path.exists()


def test_waiting_ends_when_stop_is_set(tmp_path: Path) -> None:
    holder = FileLock(tmp_path / "k.lock")
    assert holder.try_acquire()
    stop = threading.Event()
    threading.Timer(0.1, stop.set).start()
    other = FileLock(tmp_path / "k.lock")
    assert other.acquire(stop) is False and not other.held
    holder.release()


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_the_lock_of_a_killed_process_is_free(tmp_path: Path) -> None:
    path = tmp_path / "k.lock"
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert child.stdout is not None and child.stdout.readline() == b"held\n"
    assert not FileLock(path).try_acquire()
    os.kill(child.pid, signal.SIGKILL)
    child.wait(30)
    lock = FileLock(path)
    assert lock.try_acquire(), "the OS dropped it with the process"
    lock.release(unlink=True)
