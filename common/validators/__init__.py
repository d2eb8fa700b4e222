"""The service's ``validate`` section, compiled once and applied per file by suffix.

==================  ==========================================================
suffix              check
==================  ==========================================================
``.json``           the whole document against ``validate.json_schema``
``.jsonl .ndjson``  each line against ``validate.json_schema``
``.csv``            ``validate.csv`` (header, types, delimiter)
``.html .htm``      ``validate.html`` (selectors, text length, title)
``.gz .bz2 .xz``    what it holds, by the suffix before (``a.csv.gz``: ``.csv``),
                    decompressed as it streams into a temp file beside it, up to
                    ``validate.max_expanded_mb``: past it the file is rejected
                    (a compression bomb), as is a corrupt one
==================  ==========================================================

A file whose suffix has no configured check is *unchecked*: :meth:`ValidatorSet.check`
returns None rather than ``[]`` (checked and valid), and the service's ``on_unchecked``
decides (:func:`judge`): ``reject`` lands it under the rejected prefix with a problem
saying that no rule checks its type (``x.zip``: ``'.zip' files``); ``accept`` lands it
under the valid prefix, marked ``"unchecked": true`` in the manifest. The default is
``reject`` for a service with a ``validate`` section and ``accept`` for one without
(:func:`common.job_config.default_on_unchecked`). Every checker keeps at most
:data:`~common.problems.MAX_PROBLEMS_PER_FILE` problems per file.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from pathlib import PurePosixPath
from typing import Any

from common.compression import DECOMPRESSION_ERRORS, split_compression
from common.config_model import OnUnchecked, ValidateConfig
from common.interfaces.base_module import FetchedFile
from common.problems import Problem

__all__ = ["ValidatorSet", "judge", "unchecked_problem", "validators_for"]


class ValidatorSet:
    """Compiled checkers for one service. Thread-safe; build once per run and share."""

    def __init__(self, config: ValidateConfig) -> None:
        self.json = self.csv = self.html = None
        self.max_expanded_bytes = config.max_expanded_bytes
        if config.json_schema is not None:
            from common.validators.json_checker import JsonSchemaChecker

            self.json = JsonSchemaChecker(config.json_schema)
        if config.csv is not None:
            from common.validators.csv_checker import CsvChecker

            self.csv = CsvChecker(config.csv)
        if config.html is not None:
            from common.validators.html_checker import HtmlChecker

            self.html = HtmlChecker(config.html)

    def suffixes(self) -> tuple[str, ...]:
        """The file suffixes some configured rule checks."""
        return ((".json", ".jsonl", ".ndjson") if self.json else ()) + ((".csv",) if self.csv else ()) + (
            (".html", ".htm") if self.html else ())

    def check(self, file: FetchedFile) -> list[Problem] | None:
        """Problems of ``file`` (empty: valid); None when no configured rule checks its suffix."""
        inner_name, decompress = split_compression(file.name)
        if decompress is not None:
            return self._check_compressed(file, inner_name, decompress)
        return self._check_plain(file, PurePosixPath(file.name.rstrip()).suffix.lower())  # "a.csv " as given

    def _check_plain(self, file: FetchedFile, suffix: str) -> list[Problem] | None:
        if suffix == ".json" and self.json:
            return self.json.check_document(file.path)
        if suffix in (".jsonl", ".ndjson") and self.json:
            return self.json.check_lines(file.path)
        if suffix == ".csv" and self.csv:
            return self.csv.check(file.path)
        if suffix in (".html", ".htm") and self.html:
            return self.html.check(file.path)
        return None

    def _check_compressed(self, file: FetchedFile, inner_name: str,
                          decompress: Callable[..., Any]) -> list[Problem] | None:
        """Check what a ``.gz``/``.bz2``/``.xz`` file holds: streamed into a temp file beside it
        (never in memory), at most ``max_expanded_bytes``; the problems keep their row/line."""
        suffix = file.name.rstrip()[len(inner_name):].lower()
        inner_suffix = PurePosixPath(inner_name).suffix.lower()
        if inner_suffix not in self.suffixes():
            return None
        inner = file.path.with_name(file.path.name + ".expanded")
        limit = self.max_expanded_bytes
        written = 0
        try:
            with decompress(file.path, "rb") as src, open(inner, "wb") as out:
                while chunk := src.read(1 << 20):
                    written += len(chunk)
                    if written > limit:
                        return [Problem(f"not checked: expands past validate.max_expanded_mb ({limit >> 20} MiB); "
                                        "refused as a possible compression bomb")]
                    out.write(chunk)
            return self._check_plain(dataclasses.replace(file, name=inner_name, path=inner), inner_suffix)
        except DECOMPRESSION_ERRORS as exc:
            return [Problem(f"not a valid {suffix[1:]} file: {type(exc).__name__}: {str(exc)[:200]}")]
        finally:
            inner.unlink(missing_ok=True)


def unchecked_problem(name: str, checked: tuple[str, ...]) -> Problem:
    """The problem of a file no rule checks, under ``on_unchecked: reject``."""
    suffix = PurePosixPath(name.rstrip()).suffix.lower()
    kind = f"{suffix!r} files" if suffix else "files without a suffix"
    rules = ", ".join(checked) if checked else "no file type"
    return Problem(f"not checked: no rule of this service's validate section checks {kind} "
                   f"(it checks {rules}); on_unchecked is reject", location="file type")


def judge(verdict: list[Problem] | None, name: str, on_unchecked: OnUnchecked,
          checked: tuple[str, ...] = ()) -> tuple[list[Problem], bool]:
    """(problems, accepted unchecked) of the file ``name`` whose validation gave ``verdict``.

    ``verdict`` None (no rule could check the file) becomes one :func:`unchecked_problem`
    under ``reject``, and no problem but the unchecked mark under ``accept``. ``checked``:
    the suffixes the service's rules do check, named in the problem.
    """
    if verdict is not None:
        return verdict, False
    if on_unchecked == "accept":
        return [], True
    return [unchecked_problem(name, checked)], False


_cache: dict[int, tuple[ValidateConfig, ValidatorSet]] = {}
_cache_lock = threading.Lock()


def validators_for(config: ValidateConfig) -> ValidatorSet:
    """The ValidatorSet of ``config``, compiled on first use and reused by every job of the process."""
    with _cache_lock:
        hit = _cache.get(id(config))
        if hit is None or hit[0] is not config:
            hit = (config, ValidatorSet(config))
            _cache[id(config)] = hit
        return hit[1]
