"""TLS verification of the S3 source: on by default, off only per service and with a warning."""

from __future__ import annotations

from structlog.testing import capture_logs

from common.job_config import resolve_source
from common.run_resources import RunResources
from modules.s3_module.main import S3Module, s3_client_for


def test_verification_on_by_default_and_warned_when_off() -> None:
    on = resolve_source({"bucket": "b", "endpoint_url": "https://s3.tls-on.invalid"}, S3Module.source_schema)
    off = resolve_source({"bucket": "b", "endpoint_url": "https://s3.tls-off.invalid", "verify_tls": False},
                         S3Module.source_schema)
    assert on["verify_tls"] is True
    with capture_logs() as logs:
        s3_client_for(on, 5, RunResources())
        client = s3_client_for(off, 5, RunResources())
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["tls_verification_disabled"]
    assert client.meta.endpoint_url == "https://s3.tls-off.invalid"
    assert client._endpoint.http_session._verify is False
