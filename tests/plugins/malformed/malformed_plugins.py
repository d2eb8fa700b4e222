"""Plugins that import but are malformed, for ``tests/plugins/test_malformed_plugins.py``: each is
registered by a fake distribution ``malformed_plugins 2.0`` and must be reported at load, by name and
package, while every other plugin stays usable."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from module_system import BaseModule, FetchedFile, FileDestination


class BadSchemaModule(BaseModule):
    """A source whose schema is not valid JSON Schema (``type`` takes a type name or a list)."""

    source_schema = {"type": "object", "additionalProperties": False,
                     "properties": {"path": {"type": "strin"}}}

    def fetch(self, workdir: Path) -> Iterator[FetchedFile]:
        yield from ()


class NotAModule:
    """Registered as a source but derives from nothing of module_system."""

    source_schema = {"type": "object", "properties": {}}


class BadSchemaDestination(FileDestination):
    """A destination whose schema is not valid JSON Schema (``required`` must be a list)."""

    config_schema = {"type": "object", "required": "path", "properties": {"path": {"type": "string"}}}

    def describe(self) -> str:
        return "nowhere"

    def put_file(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def put_json(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def delete_owned(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def read_json(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError
