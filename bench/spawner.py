"""A small process that starts the measured clients, so that their peak RSS is their own.

    python -m bench.spawner          # reads one JSON request a line on stdin, answers one a line

Linux keeps a process's peak RSS (``ru_maxrss``) across ``exec``, and the value a child
starts with is the high-water mark of the memory it was forked (or vforked) from: a
client started straight from the benchmark process reports at least the benchmark's own
peak (measured: ``true`` started from a 300 MB parent reports 313 MB; the bench itself
grows to ~120 MB once the web row has built its site). So every measured client is
started by this process instead, whose own memory stays at ~13 MB, the floor of every
figure.

Request: ``{"argv": [...], "cwd": DIR, "env": {...}, "log": FILE, "timeout_s": S}``;
answer: ``{"wall_s", "utime", "stime", "maxrss_kib", "status", "timed_out"}`` from
``os.wait4`` of that child, its wall time measured here from start to reaping.
Only the standard library is imported here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time


def serve() -> None:
    for line in sys.stdin:
        request = json.loads(line)
        with open(request["log"], "wb") as out:
            start = time.perf_counter()
            proc = subprocess.Popen(request["argv"], cwd=request["cwd"], env=request["env"], stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            expired = threading.Event()

            def kill(proc: subprocess.Popen[bytes] = proc, expired: threading.Event = expired) -> None:
                expired.set()
                proc.kill()

            timer = threading.Timer(request["timeout_s"], kill)
            timer.start()
            try:
                _, status, usage = os.wait4(proc.pid, 0)
            finally:
                timer.cancel()
            wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
        answer = {"wall_s": wall, "utime": usage.ru_utime, "stime": usage.ru_stime, "maxrss_kib": usage.ru_maxrss,
                  "status": proc.returncode, "timed_out": expired.is_set()}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    serve()
