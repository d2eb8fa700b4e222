"""Run the module_system CLI with another GIL switch interval (an experiment of ``bench/run.py --experiments``).

    python bench/cli_switch.py SECONDS [cli_init args...]

Python hands the GIL to a waiting thread only every ``sys.getswitchinterval()`` seconds
(5 ms by default) while another thread computes. A job thread coming back from a socket
read can wait that long behind a thread validating a file: a shorter interval tells
whether that wait (the "convoy effect") costs the run time. Nothing else changes.
"""

from __future__ import annotations

import runpy
import sys

interval = float(sys.argv[1])
sys.setswitchinterval(interval)
sys.argv = ["orchestrator.cli_init", *sys.argv[2:]]
runpy.run_module("orchestrator.cli_init", run_name="__main__", alter_sys=True)
