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
atexit.register(lambda: out.write_text(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)))
runpy.run_module("orchestrator.cli_init", run_name="__main__", alter_sys=True)
