"""``module-system new-module NAME --kind source|destination|validator``: a plugin package to start from.

The templates are package data (``module_system/templates/<kind>/``, :mod:`string.Template`
files ending ``.tmpl``; a folder named ``PACKAGE`` becomes the import package). What is
written installs with ``pip install -e <dir>`` and passes its own tests as generated: the
class on the right base (:class:`~module_system.FileSource`,
:class:`~module_system.FileDestination`, :class:`~module_system.Validator`), its schema, the entry point
in ``pyproject.toml``, a README, and tests on the contract suites (``module_system.contract``).

``NAME`` is the registry ``type`` and the import package: a lowercase Python identifier
(``acme_files``) that is neither a keyword, nor a standard library module, nor one of
module_system's own top-level packages; the distribution is ``module-system-<name>`` with
dashes.
"""

from __future__ import annotations

import importlib.util
import keyword
import re
import string
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Literal

from common.exceptions import ConfigError

__all__ = ["ENTRY_POINT_GROUPS", "KINDS", "Plugin", "check_name", "write_plugin"]

Kind = Literal["source", "destination", "validator"]
KINDS: tuple[Kind, ...] = ("source", "destination", "validator")
#: The entry point group each kind registers under.
ENTRY_POINT_GROUPS: dict[str, str] = {
    "source": "module_system.modules",
    "destination": "module_system.destinations",
    "validator": "module_system.validators",
}
_SUFFIX = {"source": "Source", "destination": "Destination", "validator": "Validator"}
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
#: Top-level packages module_system installs: a plugin package of the same name would shadow them.
_OURS = frozenset({"module_system", "modules", "orchestrator", "common", "destinations", "tests"})


@dataclass(frozen=True)
class Plugin:
    """The names of one generated plugin."""

    name: str
    """The registry ``type`` (entry point name) and the import package."""
    kind: Kind
    dist: str
    """The distribution name (``module-system-acme-files``)."""
    class_name: str
    """``AcmeFilesSource``, ``AcmeFilesDestination``, ``AcmeFilesValidator``."""

    @property
    def package(self) -> str:
        return self.name

    @property
    def group(self) -> str:
        return ENTRY_POINT_GROUPS[self.kind]


def check_name(name: str, kind: str) -> Plugin:
    """The plugin's names, or ConfigError saying what is wrong with ``name``."""
    if kind not in KINDS:
        raise ConfigError(f"--kind: {kind!r} is not one of {', '.join(KINDS)}")
    if not _NAME.match(name):
        raise ConfigError(f"NAME {name!r}: use a lowercase Python identifier of at most 40 characters "
                          f"(letters, digits, '_', starting with a letter), e.g. acme_files")
    if keyword.iskeyword(name) or keyword.issoftkeyword(name):
        raise ConfigError(f"NAME {name!r} is a Python keyword")
    if name in sys.stdlib_module_names or name in _OURS:
        raise ConfigError(f"NAME {name!r} is the name of a {'standard library' if name not in _OURS else 'module_system'}"
                          f" package; the plugin's package would shadow it")
    camel = "".join(part.capitalize() for part in name.split("_") if part)
    return Plugin(name=name, kind=kind, dist="module-system-" + name.replace("_", "-"),  # type: ignore[arg-type]
                  class_name=camel + _SUFFIX[kind])


def _templates(kind: str) -> Traversable:
    return files("module_system") / "templates" / kind


def _walk(folder: Traversable, rel: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Traversable]]:
    for item in sorted(folder.iterdir(), key=lambda t: t.name):
        if item.is_dir():
            yield from _walk(item, (*rel, item.name))
        elif item.name.endswith(".tmpl"):
            yield (*rel, item.name[: -len(".tmpl")]), item


def write_plugin(name: str, kind: str, directory: Path | None = None) -> tuple[Plugin, Path, list[Path]]:
    """Write the ``kind`` plugin ``name`` into ``directory`` (default ``./<dist>``), which must be
    absent or empty. Returns the names, the folder and the files written. Raises ConfigError."""
    plugin = check_name(name, kind)
    target = Path(directory) if directory is not None else Path(plugin.dist)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ConfigError(f"--dir {target}: exists and is not an empty folder; nothing was written")
    spec = importlib.util.find_spec(plugin.package) if plugin.package not in sys.modules else None
    if spec is not None and spec.origin and not Path(spec.origin).resolve().is_relative_to(target.resolve()):
        raise ConfigError(f"NAME {name!r}: a package of that name is installed already ({spec.origin}); "
                          f"the plugin's package would clash with it")
    from module_system import __version__

    values = {"name": plugin.name, "package": plugin.package, "dist": plugin.dist,
              "class_name": plugin.class_name, "ms_version": _release(__version__)}
    templates = list(_walk(_templates(kind)))
    if not templates:
        raise ConfigError(f"--kind {kind}: this module_system has no {kind} template")
    written: list[Path] = []
    for rel, template in templates:
        parts = [plugin.package if p == "PACKAGE" else p for p in rel]
        text = string.Template(template.read_text(encoding="utf-8")).substitute(values)
        path = target.joinpath(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return plugin, target, written


def _release(version: str) -> str:
    """``0.1.0`` from ``0.1.0.dev3+g1234``: the version a generated plugin requires at least."""
    match = re.match(r"\d+(\.\d+)*", version)
    return match.group(0) if match else "0"
