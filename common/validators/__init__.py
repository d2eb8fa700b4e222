"""The service's ``validate`` section, compiled once and applied per file by suffix.

==================  ==========================================================
suffix              check
==================  ==========================================================
``.json``           the whole document against ``validate.json_schema``
``.jsonl .ndjson``  each line against ``validate.json_schema``
``.csv``            ``validate.csv`` (header, types, delimiter)
``.html .htm``      ``validate.html`` (selectors, text length, title)
==================  ==========================================================

A file whose suffix has no configured check is valid. Every checker keeps at most
:data:`~common.problems.MAX_PROBLEMS_PER_FILE` problems per file.
"""

from __future__ import annotations

import threading
from pathlib import PurePosixPath

from common.config_model import ValidateConfig
from common.interfaces.base_module import FetchedFile
from common.problems import Problem

__all__ = ["ValidatorSet", "validators_for"]


class ValidatorSet:
    """Compiled checkers for one service. Thread-safe; build once per run and share."""

    def __init__(self, config: ValidateConfig) -> None:
        self.json = self.csv = self.html = None
        if config.json_schema is not None:
            from common.validators.json_checker import JsonSchemaChecker

            self.json = JsonSchemaChecker(config.json_schema)
        if config.csv is not None:
            from common.validators.csv_checker import CsvChecker

            self.csv = CsvChecker(config.csv)
        if config.html is not None:
            from common.validators.html_checker import HtmlChecker

            self.html = HtmlChecker(config.html)

    def check(self, file: FetchedFile) -> list[Problem]:
        suffix = PurePosixPath(file.name.rstrip()).suffix.lower()  # the name as the source gives it: "a.csv "
        if suffix == ".json" and self.json:
            return self.json.check_document(file.path)
        if suffix in (".jsonl", ".ndjson") and self.json:
            return self.json.check_lines(file.path)
        if suffix == ".csv" and self.csv:
            return self.csv.check(file.path)
        if suffix in (".html", ".htm") and self.html:
            return self.html.check(file.path)
        return []


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
