"""Run ``python -m orchestrator.cli_init ARGS`` and write the process's peak RSS (KiB) to a file.

Usage: python tests/e2e/peak_rss.py OUT_FILE [cli_init args...]
"""

from __future__ import annotations

import atexit
import resource
import runpy
import sys
from pathlib import Path

out = Path(sys.argv[1])
sys.argv = ["orchestrator.cli_init", *sys.argv[2:]]


def peak_kib() -> int:
    """This process's own peak RSS. Linux's ``ru_maxrss`` starts from the parent's peak when
    the parent spawns with vfork (as ``subprocess`` does), so a big pytest process would
    inflate it; ``VmHWM`` belongs to this process's memory alone."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


atexit.register(lambda: out.write_text(str(peak_kib())))
runpy.run_module("orchestrator.cli_init", run_name="__main__", alter_sys=True)
