"""``module-system new-module NAME --kind source|destination|validator [--dir D]``.

Writes a plugin package from :mod:`module_system.scaffold`'s templates and says what to do
next. A bad ``NAME`` or a folder that is not empty is one line on stderr and exit 2.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from common.exceptions import ConfigError
from common.terminal_text import printable
from module_system.scaffold import KINDS, write_plugin
from orchestrator.exit_codes import ExitCode


@click.command("new-module")
@click.argument("name")
@click.option("--kind", type=click.Choice(KINDS), default="source", show_default=True,
              help="What the plugin is: a source module, a destination or a validator.")
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where to write the package (absent or empty) [default: ./module-system-<name>].")
def new_module_command(name: str, kind: str, directory: Path | None) -> None:
    """Write a plugin package NAME (its registry type and import package) to start from.

    It installs with `pip install -e DIR` and passes its own tests (`pytest` in DIR) as
    generated: the class on the right base, its schema, the entry point, a README and tests
    on module_system's contract suites.
    """
    try:
        plugin, target, written = write_plugin(name, kind, directory)
    except ConfigError as exc:
        click.echo(f"error: {printable(str(exc))}", err=True)
        sys.exit(ExitCode.USAGE)
    for path in written:
        click.echo(printable(f"wrote {path}"))
    click.echo()
    click.echo(printable(f"{plugin.kind} {plugin.name!r}: {plugin.class_name}, entry point group {plugin.group}."))
    click.echo("Next:")
    for step in (f"pip install -e {target}", "module-system modules", f"(cd {target} && pytest)"):
        click.echo(printable(f"  {step}"))
