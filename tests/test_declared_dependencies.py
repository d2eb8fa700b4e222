"""Every package the code imports directly is declared in pyproject.toml: the package's own code
in ``dependencies`` (or the ``test`` extra, for the test helpers it ships: ``module_system.testing``
and ``module_system.contract`` say they need it; the ``distributed`` extra for the Dask executor,
imported only with ``--executor dask...``; the ``serve`` extra for ``module-system serve``), the tests in
``dependencies``, ``test``, ``distributed`` or ``serve`` (requirements.txt installs them all), bench/ in any extra. A transitive dependency imported by name (``soupsieve`` through beautifulsoup4)
breaks the day its parent stops pulling it in."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OWN = {"common", "modules", "orchestrator", "module_system", "destinations", "tests", "bench", "ms_example_plugin",
       "test_system"}


def _declared() -> dict[str, set[str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def names(specs: list[str]) -> set[str]:
        return {re.split(r"[\[<>=!~; ]", spec, maxsplit=1)[0].lower().replace("_", "-") for spec in specs}

    groups = {"dependencies": names(project["dependencies"])}
    groups.update({extra: names(specs) for extra, specs in project["optional-dependencies"].items()})
    return groups


def _imports(folder: Path) -> dict[str, Path]:
    """Top-level third-party names imported in ``folder`` (absolute imports), with one file each."""
    found: dict[str, Path] = {}
    for path in sorted(folder.rglob("*.py")) if folder.is_dir() else [folder]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                tops = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                tops = [node.module.split(".")[0]]
            else:
                continue
            for top in tops:
                if top not in sys.stdlib_module_names and top not in OWN and not top.startswith("_"):
                    found.setdefault(top, path)
    return found


@pytest.mark.parametrize(("folder", "allowed"), [
    ("common", ("dependencies",)), ("modules", ("dependencies",)),
    # orchestrator/dask_*.py: only with --executor dask...; orchestrator/serve/: only for `module-system serve`
    ("orchestrator", ("dependencies", "distributed", "serve")),
    ("destinations", ("dependencies",)), ("module_system", ("dependencies", "test")),
    ("tests", ("dependencies", "test", "distributed", "serve")), ("bench", None),
])
def test_every_direct_import_is_declared(folder: str, allowed: tuple[str, ...] | None) -> None:
    groups = _declared()
    declared = set().union(*(groups[g] for g in allowed)) if allowed else set().union(*groups.values())
    dists = packages_distributions()
    missing = []
    for name, path in sorted(_imports(ROOT / folder).items()):
        providers = {d.lower().replace("_", "-") for d in dists.get(name, [name])}
        if not providers & declared:
            missing.append(f"{name} ({path.relative_to(ROOT)}; provided by {', '.join(sorted(providers))})")
    assert not missing, f"imported in {folder}/ but not declared in {' or '.join(allowed or ('any group',))}: {missing}"
