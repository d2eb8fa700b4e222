"""module_system: plugin-based, multi-source data ingestion (fetch -> validate -> land).

The public facade for programs that run batches and for plugin authors::

    import module_system

    result = module_system.run("project_registry.yaml", "nightly.json")   # a RunResult
    module_system.validate("project_registry.yaml", "nightly.json")       # ConfigError lists every mistake
    plans = module_system.plan("project_registry.yaml", "nightly.json")   # what a run would fetch

    from module_system import BaseModule, FetchedFile, JobContext, Problem

Source modules subclass :class:`BaseModule` (or :class:`FileSource`) and register under the
entry point group ``module_system.modules``; destinations subclass :class:`FileDestination` or
:class:`RecordDestination` and register under ``module_system.destinations``; validators
subclass :class:`Validator` and register under ``module_system.validators``. See docs/API.md
(running batches) and docs/PLUGINS.md (plugins).

The running API (``run``, ``validate``, ``plan`` and their result types) and
``new_s3_client`` are imported on first use, so that a plugin importing this package loads
neither the orchestrator nor boto3.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from common.exceptions import (
    RETRY_HTTP_CODES,
    ConfigError,
    DiskFullError,
    ListingIncomplete,
    ModuleSystemError,
    PluginError,
    SourceError,
    TransferStopped,
    Transient,
    TransientSourceError,
    UploadError,
    UploadWithdrawn,
    is_transient,
)
from common.file_sink import FileSink, FileTooLarge
from common.host_limiter import host_of
from common.interfaces.base_module import (
    BaseModule,
    FetchedFile,
    FetchFailed,
    JobContext,
    SourceConfig,
    StoredAt,
    Unchanged,
)
from common.interfaces.destination import (
    DESTINATION_GROUP,
    Column,
    Destination,
    DestinationSetup,
    DestinationUnusable,
    FileDestination,
    LandingFile,
    LoadOutcome,
    RecordDestination,
    RecordsRefused,
    RecordTarget,
)
from common.interfaces.file_source import Entry, FileSource, FileVanished, NotModified
from common.interfaces.validator import VALIDATOR_GROUP, Validator, ValidatorSetup
from common.plugins import ENTRY_POINT_GROUP
from common.problems import Problem, capped
from common.retry import RetryPolicy
from common.run_resources import RunResources
from common.secret import Secret, redact, redact_url, reveal
from common.transfer_watchdog import (
    Transfer,
    ends_on_stop,
    shut_response,
    shut_socket,
    watch,
)

if TYPE_CHECKING:
    from common.html_tree import (
        Css,
        HtmlFindings,
        HtmlQuery,
        HtmlTooLarge,
        compile_css,
        element_text,
        query_html,
        read_html,
    )
    from common.s3_client import new_s3_client, s3_store
    from common.s3_crt import CRT_MAX_BODY, CrtS3, crt_s3
    from orchestrator.exit_codes import ExitCode
    from orchestrator.plan import JobPlan
    from orchestrator.python_api import RunSettings, Validated, plan, run, validate
    from orchestrator.run_result import (
        FileCounts,
        JobCounts,
        JobSummary,
        RunResult,
        Totals,
    )

#: Names imported on first use, and the module that defines each.
_LAZY = {
    "ExitCode": "orchestrator.exit_codes",
    "FileCounts": "orchestrator.run_result",
    "JobCounts": "orchestrator.run_result",
    "JobPlan": "orchestrator.plan",
    "JobSummary": "orchestrator.run_result",
    "RunResult": "orchestrator.run_result",
    "RunSettings": "orchestrator.python_api",
    "Totals": "orchestrator.run_result",
    "Validated": "orchestrator.python_api",
    "plan": "orchestrator.python_api",
    "run": "orchestrator.python_api",
    "validate": "orchestrator.python_api",
    "new_s3_client": "common.s3_client",
    "s3_store": "common.s3_client",
    "CRT_MAX_BODY": "common.s3_crt",
    "CrtS3": "common.s3_crt",
    "crt_s3": "common.s3_crt",
    # lxml and cssselect only for the runs that read HTML
    "Css": "common.html_tree",
    "HtmlFindings": "common.html_tree",
    "HtmlQuery": "common.html_tree",
    "HtmlTooLarge": "common.html_tree",
    "compile_css": "common.html_tree",
    "element_text": "common.html_tree",
    "query_html": "common.html_tree",
    "read_html": "common.html_tree",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'module_system' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


try:
    __version__ = version("module_system")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"

__all__ = [
    "CRT_MAX_BODY",
    "DESTINATION_GROUP",
    "ENTRY_POINT_GROUP",
    "RETRY_HTTP_CODES",
    "VALIDATOR_GROUP",
    "BaseModule",
    "Column",
    "ConfigError",
    "CrtS3",
    "Css",
    "Destination",
    "DestinationSetup",
    "DestinationUnusable",
    "DiskFullError",
    "Entry",
    "ExitCode",
    "FetchFailed",
    "FetchedFile",
    "FileCounts",
    "FileDestination",
    "FileSink",
    "FileSource",
    "FileTooLarge",
    "FileVanished",
    "HtmlFindings",
    "HtmlQuery",
    "HtmlTooLarge",
    "JobContext",
    "JobCounts",
    "JobPlan",
    "JobSummary",
    "LandingFile",
    "ListingIncomplete",
    "LoadOutcome",
    "ModuleSystemError",
    "NotModified",
    "PluginError",
    "Problem",
    "RecordDestination",
    "RecordTarget",
    "RecordsRefused",
    "RetryPolicy",
    "RunResources",
    "RunResult",
    "RunSettings",
    "Secret",
    "SourceConfig",
    "SourceError",
    "StoredAt",
    "Totals",
    "Transfer",
    "TransferStopped",
    "Transient",
    "TransientSourceError",
    "Unchanged",
    "UploadError",
    "UploadWithdrawn",
    "Validated",
    "Validator",
    "ValidatorSetup",
    "__version__",
    "capped",
    "compile_css",
    "crt_s3",
    "element_text",
    "ends_on_stop",
    "host_of",
    "is_transient",
    "new_s3_client",
    "plan",
    "query_html",
    "read_html",
    "redact",
    "redact_url",
    "reveal",
    "run",
    "s3_store",
    "shut_response",
    "shut_socket",
    "validate",
    "watch",
]
