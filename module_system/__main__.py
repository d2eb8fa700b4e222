"""``python -m module_system`` is the ``module-system`` command."""

from orchestrator.cli_init import main, run_program

run_program(main)
