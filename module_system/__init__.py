"""module_system: plugin-based, multi-source data ingestion (fetch -> validate -> land).

The public facade for plugin authors and scripts::

    from module_system import BaseModule, FetchedFile, JobContext, Problem

Source modules subclass :class:`BaseModule` (or :class:`FileSource`) and register under the
entry point group ``module_system.modules``; destinations subclass :class:`FileDestination` or
:class:`RecordDestination` and register under ``module_system.destinations``; validators
subclass :class:`Validator` and register under ``module_system.validators``. See docs/PLUGINS.md.
"""

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
    is_transient,
)
from common.file_sink import FileSink, FileTooLarge
from common.host_limiter import host_of
from common.html_tree import Css, HtmlTooLarge, compile_css, element_text, read_html
from common.interfaces.base_module import (
    BaseModule,
    FetchedFile,
    FetchFailed,
    JobContext,
    SourceConfig,
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

try:
    __version__ = version("module_system")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"

__all__ = [
    "DESTINATION_GROUP",
    "ENTRY_POINT_GROUP",
    "RETRY_HTTP_CODES",
    "VALIDATOR_GROUP",
    "BaseModule",
    "Column",
    "ConfigError",
    "Css",
    "Destination",
    "DestinationSetup",
    "DestinationUnusable",
    "DiskFullError",
    "Entry",
    "FetchFailed",
    "FetchedFile",
    "FileDestination",
    "FileSink",
    "FileSource",
    "FileTooLarge",
    "FileVanished",
    "HtmlTooLarge",
    "JobContext",
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
    "Secret",
    "SourceConfig",
    "SourceError",
    "Transfer",
    "TransferStopped",
    "Transient",
    "TransientSourceError",
    "Unchanged",
    "UploadError",
    "Validator",
    "ValidatorSetup",
    "__version__",
    "capped",
    "compile_css",
    "element_text",
    "ends_on_stop",
    "host_of",
    "is_transient",
    "new_s3_client",
    "read_html",
    "redact",
    "redact_url",
    "reveal",
    "shut_response",
    "shut_socket",
    "watch",
]


if TYPE_CHECKING:
    from common.s3_client import new_s3_client


def __getattr__(name: str) -> Any:
    """``new_s3_client`` is imported on first use: a run that never touches S3 never imports boto3."""
    if name == "new_s3_client":
        from common.s3_client import new_s3_client

        return new_s3_client
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
