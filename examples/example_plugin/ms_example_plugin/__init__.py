"""An example module_system plugin: the ``localdir`` source module.

Installing this package (``pip install -e examples/example_plugin``) makes
``type: localdir`` usable in a registry; see README.md beside it.
"""

from __future__ import annotations

from ms_example_plugin.localdir import LocalDirError, LocalDirModule

__all__ = ["LocalDirError", "LocalDirModule"]
