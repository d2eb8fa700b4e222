"""Typed, immutable configuration objects built by :mod:`common.job_config`.

Nothing past the config edge sees raw YAML or JSON: the orchestrator and the modules
read these objects, whose every default was filled from the shipped schemas.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from common.secret import Secret

ChecksumMode = Literal["sha256", "crc32", "when_required"]
CsvType = Literal["int", "float", "date", "datetime", "str", "bool"]
OnUnchecked = Literal["accept", "reject"]

#: Default destination prefixes per module type: (valid, rejected).
DEFAULT_PREFIXES: dict[str, tuple[str, str]] = {
    "s3": ("data/s3/{service_id}/validated/", "data/s3/{service_id}/rejected/"),
    "ftp": ("data/ftp/{service_id}/validated/", "data/ftp/{service_id}/rejected/"),
    "web": ("data/web/{service_id}/scraped/", "data/web/{service_id}/rejected/"),
    "api": ("data/api/{service_id}/responses/", "data/api/{service_id}/rejected/"),
    "local": ("data/local/{service_id}/validated/", "data/local/{service_id}/rejected/"),
}
#: For plugin types not in DEFAULT_PREFIXES.
GENERIC_PREFIXES = ("data/{type}/{service_id}/validated/", "data/{type}/{service_id}/rejected/")


@dataclass(frozen=True)
class RetryConfig:
    attempts: int
    """Total tries of one operation, the first included."""
    backoff_s: float
    """First delay in seconds; doubled each retry, with jitter."""
    max_backoff_s: float
    """Cap on one delay."""


@dataclass(frozen=True)
class DestinationSpec:
    """One destination of a service, as the registry gives it."""

    type: str
    """The destination's entry point name (``s3``, ``local``, ``sql``, a plugin's)."""
    name: str
    """How the manifest names it (``name``, default its type)."""
    kind: Literal["files", "records"]
    prefix: str
    """Template of the valid-file prefix (file destinations; empty for record destinations)."""
    rejected_prefix: str
    """Template of the rejected-file prefix."""
    config: Mapping[str, Any]
    """The destination's own keys, defaults filled from its ``config_schema``, secrets as Secret."""


@dataclass(frozen=True)
class DestinationConfig:
    """The settings of an ``s3`` destination (``destinations.s3.s3_settings``)."""

    bucket: str
    """Destination bucket."""
    endpoint_url: str | None
    """S3-compatible endpoint, or None for AWS."""
    region: str
    checksum: ChecksumMode
    """Transport checksum algorithm sent with uploads."""
    access_key_id: Secret | None
    secret_access_key: Secret | None
    multipart_threshold_mb: int
    multipart_chunksize_mb: int
    max_concurrency: int
    verify_tls: bool = True
    """Verify the endpoint's TLS certificate."""
    crt: bool = True
    """Small PUTs through the AWS Common Runtime when it is installed (:mod:`common.s3_crt`)."""

    def client_key(self) -> tuple[Any, ...]:
        """Destinations with equal keys share one boto3 client."""
        return (self.endpoint_url, self.region, self.checksum, self.access_key_id, self.secret_access_key,
                self.max_concurrency, self.multipart_threshold_mb, self.multipart_chunksize_mb, self.verify_tls, self.crt)


@dataclass(frozen=True)
class CsvRules:
    columns: tuple[str, ...] | None
    """Required header, in order (None: any header)."""
    types: Mapping[str, CsvType]
    """Column name to type."""
    delimiter: str
    allow_empty: bool
    """Whether an empty cell passes a typed column."""


@dataclass(frozen=True)
class HtmlRules:
    required: tuple[str, ...]
    """CSS selectors that must match."""
    min_text_chars: int
    require_title: bool


@dataclass(frozen=True)
class TableRules:
    """``validate.parquet`` and ``validate.xlsx``: the ``csv``-style column rules of a table file."""

    columns: tuple[str, ...] | None
    """Required columns, in order (None: any)."""
    types: Mapping[str, CsvType]
    """Column name to type (the ``validate.csv.types`` vocabulary)."""
    allow_empty: bool
    """Whether an empty (null) value passes a typed column."""
    sheet: str | None = None
    """``.xlsx``: the sheet to read (None: the first)."""
    json_schema_path: Path | None = None
    """``.parquet``: a JSON Schema file each row (as an object) must match."""
    json_schema: Mapping[str, Any] | None = None
    """The loaded, checked row schema."""


@dataclass(frozen=True)
class ValidateConfig:
    json_schema_path: Path | None
    """Resolved path of the JSON Schema file."""
    json_schema: Mapping[str, Any] | None
    """The loaded, checked schema document."""
    csv: CsvRules | None
    html: HtmlRules | None
    max_expanded_bytes: int = 1024 << 20
    """A compressed file or archive expanding past this is rejected (``validate.max_expanded_mb``)."""
    parquet: TableRules | None = None
    xlsx: TableRules | None = None
    on_unchecked: OnUnchecked = "reject"
    """The service's ``on_unchecked``, for the members of an archive no rule checks."""
    validators: tuple[tuple[str, Mapping[str, Any]], ...] = ()
    """The validators the section uses: (entry point name, the keys it owns that the section
    sets, defaults filled), in name order. Empty: those of the typed fields above."""
    min_files: int | None = None
    """``validate.quality.min_files``: a job landing fewer valid files fails."""
    service_id: str = ""
    base_dir: Path = Path(".")
    """The registry file's folder (validators resolve file names against it)."""


@dataclass(frozen=True)
class ServiceConfig:
    service_id: str
    type: str
    """Registry type, the module's entry point name."""
    source: Mapping[str, Any]
    """Merged source keys, defaults filled from the module's schema; secrets as Secret."""
    fallback: tuple[Mapping[str, Any], ...]
    """Complete alternative sources (each fallback entry merged over ``source``)."""
    validate: ValidateConfig
    on_unchecked: OnUnchecked
    """What becomes of a file no rule of ``validate`` checks: ``reject`` or ``accept`` (marked
    ``unchecked`` in the manifest). The registry's default depends on whether the service
    has a ``validate`` section: :func:`common.job_config.default_on_unchecked`."""
    destinations: tuple[DestinationSpec, ...]
    """Where files land (fan-out when more than one); at least one file destination."""
    retry: RetryConfig
    timeout_s: float
    max_connections: int | None
    """Per-host cap on connections in use at once by all jobs and transfers of the run
    (``limits.max_connections``), or None."""
    incremental: bool
    """Skip files whose source identity matches the job's last manifest."""
    max_file_bytes: int
    """Larger files are refused (recorded as rejected)."""
    requests_per_s: float | None
    """``rate_limit.requests_per_s`` (per host), or None."""
    transfers: int = 1
    """Files or requests in flight at once inside one job (``transfers``)."""
    delay_s: float = 0.0
    """``limits.delay_s``: request starts to one host at least this far apart."""
    state_key: str = ""
    """The incremental state this service's jobs share (``state_key``, default the service id)."""
    unpack: bool = False
    """``unpack``: a fetched ``.zip``/tar lands as its members (each validated and landed under
    ``<archive name>/<member path>``), not as itself."""


    @property
    def file_destinations(self) -> tuple[DestinationSpec, ...]:
        return tuple(d for d in self.destinations if d.kind == "files")


NotifyOn = Literal["failure", "always"]


@dataclass(frozen=True)
class Webhook:
    url: Secret
    """Where the run summary is POSTed; a Secret, since webhook URLs often hold a token."""
    on: NotifyOn
    """``failure``: only when the run's exit code is not 0; ``always``: after every run."""


@dataclass(frozen=True)
class NotifyConfig:
    """The registry's ``notify`` section: who is told when a run ends."""

    webhooks: tuple[Webhook, ...]
    retry: RetryConfig
    """Tries per webhook (transient failures only: refused connections, timeouts, 408/429/5xx)."""
    timeout_s: float
    """Timeout of one POST."""


@dataclass(frozen=True)
class Registry:
    path: Path
    services: Mapping[str, ServiceConfig]
    notify: NotifyConfig | None = None
    """The ``notify`` section, or None when the registry has none."""


@dataclass(frozen=True)
class JobSpec:
    job_id: str
    service_id: str
    priority: int
    """1-10; higher runs first, file order among equals."""
    index: int
    """Position in the batch file."""
    params: Mapping[str, Any]
    """Overrides of the service's source keys for this job only."""
    sources: tuple[Mapping[str, Any], ...]
    """The primary source then each fallback, with ``params`` applied, fully resolved."""


@dataclass(frozen=True)
class Batch:
    path: Path
    description: str
    jobs: tuple[JobSpec, ...]
