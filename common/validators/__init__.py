"""The service's ``validate`` section, compiled once and applied per file.

Each key of the section belongs to a validator (:class:`~common.interfaces.validator.Validator`,
entry point group ``module_system.validators``); the service uses the validators whose keys it
sets, and each file goes to those that apply to its name (by default, its suffix). The
built-in ones:

======================  ======================================================
suffix                  check
======================  ======================================================
``.json``               the whole document against ``validate.json_schema``
``.jsonl .ndjson``      each line (newline-delimited JSON) against ``validate.json_schema``
``.csv``                ``validate.csv`` (header, types, delimiter)
``.parquet``            ``validate.parquet`` (schema, types, rows; pyarrow, in row batches)
``.xlsx``               ``validate.xlsx`` (header and cells of one sheet; openpyxl, read-only)
``.html .htm``          ``validate.html`` (selectors, text length, title)
row files               ``validate.quality`` (rows, unique, not null, freshness;
                        :mod:`common.validators.quality`), beside the format's own check
``.gz .bz2 .xz``        what it holds, by the suffix before (``a.csv.gz``: ``.csv``),
                        decompressed as it streams into a temp file beside it, up to
                        ``validate.max_expanded_mb``: past it the file is rejected
                        (a compression bomb), as is a corrupt one
``.zip .tar .tar.gz``   each member by its own suffix (also ``.tgz .tar.bz2 .tar.xz``),
                        one at a time, streamed into a temp file beside it; all members
                        together within ``validate.max_expanded_mb``
                        (:mod:`common.archives`); a member's problems are located
                        ``a.zip!data/x.csv row 3, column 'amount'``
======================  ======================================================

A file whose suffix has no configured check is *unchecked*: :meth:`ValidatorSet.check`
returns None rather than ``[]`` (checked and valid), and the service's ``on_unchecked``
decides (:func:`judge`): ``reject`` lands it under the rejected prefix with a problem
saying that no rule checks its type (``x.bin``: ``'.bin' files``); ``accept`` lands it
under the valid prefix, marked ``"unchecked": true`` in the manifest. The default is
``reject`` for a service with a ``validate`` section and ``accept`` for one without
(:func:`common.job_config.default_on_unchecked`). An archive is unchecked when no rule
checks any of its members; a member no rule checks is, under ``reject``, a problem of the
archive. Unsafe members (``../x``, ``/etc/x``, links) are problems, never written.
Every checker keeps at most :data:`~common.problems.MAX_PROBLEMS_PER_FILE` problems per file.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from common.archives import (
    ArchiveError,
    ExpansionBudget,
    ExpansionLimit,
    archive_suffix,
    copy_member,
    iter_members,
    member_label,
)
from common.compression import DECOMPRESSION_ERRORS, split_compression
from common.config_model import OnUnchecked, ValidateConfig
from common.interfaces.base_module import FetchedFile
from common.interfaces.validator import Validator
from common.problems import Problem, capped

__all__ = ["ValidatorSet", "judge", "unchecked_problem", "validators_for"]

#: Archives inside archives are checked this deep; deeper ones are problems.
MAX_NESTING = 2


#: The built-in validator (entry point name) of each typed field of ValidateConfig.
_TYPED = (("json_schema", "json"), ("csv", "csv"), ("html", "html"), ("parquet", "parquet"), ("xlsx", "xlsx"))


def _uses(config: ValidateConfig) -> tuple[tuple[str, Mapping[str, Any]], ...]:
    """The validators of ``config``: as the registry named them, or (a ValidateConfig built by
    hand) the built-ins of its typed fields."""
    if config.validators:
        return config.validators
    return tuple((name, {}) for field, name in _TYPED if getattr(config, field) is not None)


class ValidatorSet:
    """The service's validators (:class:`~common.interfaces.validator.Validator`), each built once;
    a file goes to those that apply to its name. Thread-safe; build once per run and share."""

    def __init__(self, config: ValidateConfig) -> None:
        from common.interfaces.validator import ValidatorSetup
        from common.plugins import default_validators

        self.max_expanded_bytes = config.max_expanded_bytes
        self.on_unchecked: OnUnchecked = config.on_unchecked
        setup = ValidatorSetup(config.service_id, config.base_dir, config.max_expanded_bytes, config)
        catalog = default_validators()
        self.validators: tuple[tuple[str, Validator], ...] = tuple(
            (name, catalog.load(name)(keys, setup)) for name, keys in _uses(config))

    def builtin_checker(self, name: str) -> Any:
        """The checker of the built-in validator ``name`` (``json``, ``csv``, ``html``, ``parquet``,
        ``xlsx``) when the service uses it, else None: modules checking a file their own way
        (the api module per record, the web module on the tree it parsed) reuse it."""
        for used, validator in self.validators:
            if used == name:
                return getattr(validator, "checker", None)
        return None

    @property
    def json(self) -> Any:
        """``validate.json_schema`` compiled (a JsonSchemaChecker), or None."""
        return self.builtin_checker("json")

    @property
    def csv(self) -> Any:
        return self.builtin_checker("csv")

    @property
    def html(self) -> Any:
        """``validate.html`` compiled (an HtmlChecker), or None."""
        return self.builtin_checker("html")

    def suffixes(self) -> tuple[str, ...]:
        """The file suffixes some configured validator checks."""
        return tuple(dict.fromkeys(s for _, v in self.validators for s in v.suffixes))

    def check(self, file: FetchedFile) -> list[Problem] | None:
        """Problems of ``file`` (empty: valid); None when no configured validator checks it."""
        return self.check_path(file.path, file.name, ExpansionBudget(self.max_expanded_bytes))

    def check_path(self, path: Path, name: str, budget: ExpansionBudget, depth: int = 0) -> list[Problem] | None:
        """Problems of the file at ``path`` named ``name``, its expansion counted in ``budget``."""
        suffix = archive_suffix(name)
        if suffix is not None:
            return self._check_archive(path, name, suffix, budget, depth)
        inner_name, decompress = split_compression(name)
        if decompress is not None:
            return self._check_compressed(path, name, inner_name, decompress, budget)
        return self._check_plain(path, name)

    def _check_plain(self, path: Path, name: str) -> list[Problem] | None:
        chosen = [v for _, v in self.validators if v.applies_to(name)]
        if not chosen:
            return None
        if len(chosen) == 1:
            return chosen[0].check(path, name)
        return capped(p for v in chosen for p in v.check(path, name))

    def checks(self, name: str) -> bool:
        """Whether some validator may check a file named ``name`` (through compression; an archive
        always: its members decide)."""
        if archive_suffix(name) is not None:
            return True
        inner = split_compression(name)[0]
        return any(v.applies_to(inner) for _, v in self.validators)

    def _check_compressed(self, path: Path, name: str, inner_name: str, decompress: Callable[..., Any],
                          budget: ExpansionBudget) -> list[Problem] | None:
        """Check what a ``.gz``/``.bz2``/``.xz`` file holds: streamed into a temp file beside it
        (never in memory), within ``budget``; the problems keep their row/line."""
        suffix = name.rstrip()[len(inner_name):].lower()
        if not self.checks(inner_name) or archive_suffix(inner_name) is not None:
            return None  # "a.zip.gz": not read twice over
        inner = path.with_name(path.name + ".expanded")
        try:
            with decompress(path, "rb") as src, open(inner, "wb") as out:
                while chunk := src.read(1 << 20):
                    budget.take(len(chunk))
                    out.write(chunk)
            return self._check_plain(inner, inner_name)
        except ExpansionLimit as exc:
            return [Problem(f"not checked: {exc}")]
        except DECOMPRESSION_ERRORS as exc:
            return [Problem(f"not a valid {suffix[1:]} file: {type(exc).__name__}: {str(exc)[:200]}")]
        finally:
            inner.unlink(missing_ok=True)

    def _check_archive(self, path: Path, name: str, suffix: str, budget: ExpansionBudget,
                       depth: int) -> list[Problem] | None:
        """Check each member of a zip or tar by its own suffix, one at a time, within ``budget``."""
        problems: list[Problem] = []
        checked = False
        scratch = path.with_name(f"{path.name}.member{depth}")
        try:
            for member in iter_members(path, suffix, budget):
                where = member_label(name, member.name)
                if member.problem is not None:
                    problems.append(Problem(member.problem, where))
                    continue
                if not self.checks(member.name):
                    if self.on_unchecked == "reject":
                        problems.append(dataclasses.replace(unchecked_problem(member.name, self.suffixes()),
                                                            location=where))
                    continue
                if archive_suffix(member.name) is not None and depth + 1 >= MAX_NESTING:
                    problems.append(Problem(f"an archive nested more than {MAX_NESTING} deep: not read", where))
                    continue
                with open(scratch, "wb") as out:
                    copy_member(member, out)
                verdict = self.check_path(scratch, member.name, budget, depth + 1)
                if verdict is None:  # e.g. a member archive holding nothing checkable
                    continue
                checked = True
                problems.extend(Problem(p.message, f"{where} {p.location}" if p.location else where)
                                for p in verdict)
        except ExpansionLimit as exc:
            problems.append(Problem(f"not checked: {exc}", PurePosixPath(name.rstrip()).name))
        except ArchiveError as exc:
            problems.append(Problem(str(exc), PurePosixPath(name.rstrip()).name))
        finally:
            scratch.unlink(missing_ok=True)
        if not checked and not problems:
            return None
        return capped(problems)


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
