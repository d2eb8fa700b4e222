"""module_system: plugin-based, multi-source data ingestion (fetch -> validate -> upload to S3).

The public facade for plugin authors and scripts::

    from module_system import BaseModule, FetchedFile, JobContext, Problem

Source modules subclass :class:`BaseModule` and register under the entry point group
``module_system.modules``; see docs/PLUGINS.md.
"""

from importlib.metadata import PackageNotFoundError, version

from common.exceptions import (
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
from common.interfaces.base_module import (
    BaseModule,
    FetchedFile,
    FetchFailed,
    JobContext,
    SourceConfig,
    Unchanged,
)
from common.interfaces.file_source import Entry, FileSource, FileVanished
from common.plugins import ENTRY_POINT_GROUP
from common.problems import Problem
from common.retry import RetryPolicy
from common.secret import Secret
from common.transfer_watchdog import ends_on_stop, shut_response, watch

try:
    __version__ = version("module_system")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"

__all__ = [
    "ENTRY_POINT_GROUP",
    "BaseModule",
    "ConfigError",
    "DiskFullError",
    "Entry",
    "FetchFailed",
    "FetchedFile",
    "FileSink",
    "FileSource",
    "FileTooLarge",
    "FileVanished",
    "JobContext",
    "ListingIncomplete",
    "ModuleSystemError",
    "PluginError",
    "Problem",
    "RetryPolicy",
    "Secret",
    "SourceConfig",
    "SourceError",
    "TransferStopped",
    "Transient",
    "TransientSourceError",
    "Unchanged",
    "UploadError",
    "__version__",
    "ends_on_stop",
    "is_transient",
    "shut_response",
    "watch",
]
