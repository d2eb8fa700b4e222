"""The validator plugin contract: a class that owns some keys of a service's ``validate``
section and checks the files it applies to.

Validators register under the entry point group ``module_system.validators`` (name = how
``module-system modules`` lists it); the built-in ``csv``, ``json``, ``html``, ``parquet``,
``xlsx`` and ``quality`` validators register the same way in module_system's own
``pyproject.toml``. The framework picks, per service, every validator owning a key its
``validate`` section sets; for each file it runs those that :meth:`~Validator.applies_to` it
(a compressed file or an archive member by the name of what it holds). A file no chosen
validator applies to is *unchecked* (``on_unchecked`` decides).

A validator:

* declares the keys it owns in :attr:`~Validator.validate_schema`, a JSON Schema object
  whose ``properties`` are those keys: a registry setting them is checked against it when
  it is loaded, defaults filled, and a mistake is reported like every config error (exit 2,
  one line naming file, service and key ``validate.<key>...``);
* is built once per service per run with its keys (:meth:`~Validator.__init__`): compile
  there. It is also built once when the registry is loaded, so raising
  :class:`~common.exceptions.ConfigError` with ``key="validate.<key>"`` there reports a
  value the schema cannot judge (a bad regular expression);
* checks one file at a time in :meth:`~Validator.check`, from any thread at once: keep no
  state per call, stream the file (memory must not grow with it), return problems (data),
  at most :data:`~common.problems.MAX_PROBLEMS_PER_FILE` (see :func:`~common.problems.capped`).
  An exception raised there rejects that one file (``validator failed: ...``).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from common.problems import Problem

if TYPE_CHECKING:
    from common.config_model import ValidateConfig

__all__ = ["VALIDATOR_GROUP", "Validator", "ValidatorSetup"]

#: The entry point group of validators.
VALIDATOR_GROUP = "module_system.validators"


@dataclass(frozen=True)
class ValidatorSetup:
    """What a validator is built with besides its own keys."""

    service_id: str
    """The service whose ``validate`` section it serves."""
    base_dir: Path
    """The registry file's folder: resolve file names given in your keys against it."""
    max_expanded_bytes: int = 1024 << 20
    """``validate.max_expanded_mb`` in bytes: bound what a file you decompress may expand to."""
    validate: ValidateConfig | None = None
    """The service's whole ``validate`` section as the framework read it (the built-in
    validators take their typed rules from it; a plugin reads its own keys)."""


class Validator(abc.ABC):
    """Base class of validators, registered under ``module_system.validators``."""

    validate_schema: ClassVar[Mapping[str, Any]]
    """JSON Schema (``"type": "object"``) of the ``validate`` keys this validator owns, in its
    ``properties`` (for example ``{"type": "object", "properties": {"geojson": {...}}}``).
    A service uses the validator when its ``validate`` section sets any of them."""
    suffixes: ClassVar[tuple[str, ...]] = ()
    """File suffixes it checks, lower case with the dot (``(".geojson",)``); see :meth:`applies_to`."""

    def __init__(self, config: Mapping[str, Any], setup: ValidatorSetup) -> None:
        """``config``: the keys of :attr:`validate_schema` the service sets, checked and with
        their defaults filled (deep-frozen). Compile what you need here."""
        self.config = config
        self.setup = setup

    def applies_to(self, name: str) -> bool:
        """Whether this validator checks the file ``name`` (source-relative, ``/``-separated;
        the inner name for ``a.csv.gz`` and archive members). Default: by :attr:`suffixes`."""
        return name.rstrip().lower().endswith(self.suffixes) if self.suffixes else False

    @abc.abstractmethod
    def check(self, path: Path, name: str) -> list[Problem]:
        """Problems of the file at ``path`` (named ``name`` at its source); empty: it passes.

        Thread-safe, streamed, at most MAX_PROBLEMS_PER_FILE problems; never modifies the file.
        """
