"""boto3 S3 clients as module_system makes them: named, from one session per process.

Both S3 clients of a run (the uploader's and the S3 source module's) come from
:func:`new_s3_client`, made from one boto3 session per process, so the service model is
parsed once. Each is an ordinary boto3 client, but:

* **Its User-Agent is** ``module_system/<version> Python/<version>``, set through
  ``Config(user_agent=...)`` (boto3 appends ``Botocore/<version>``): the store's access
  logs show which tool called, as they show ``rclone/v1.60`` for rclone. Botocore
  rebuilds its default header from about 30 components twice per request (~0.15 ms
  each time); a configured one is a constant.
"""

from __future__ import annotations

import platform
import threading
from typing import Any

import boto3.session
import botocore.session
from botocore.config import Config

__all__ = ["USER_AGENT", "new_s3_client", "s3_store", "shared_credentials"]


def _our_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("module_system")
    except PackageNotFoundError:  # a source tree that was not installed
        return "0.0.0"


USER_AGENT = f"module_system/{_our_version()} Python/{platform.python_version()}"


_session_lock = threading.Lock()
_session: tuple[boto3.session.Session, Any] | None = None


def _shared_session() -> tuple[boto3.session.Session, Any]:
    """The process's boto3 session and its botocore session (whose data loader caches the
    service model and the endpoint ruleset: a second client costs ~5 ms, not ~50)."""
    global _session
    if _session is None:
        core = botocore.session.get_session()
        _session = (boto3.session.Session(botocore_session=core), core)
    return _session


def s3_store(endpoint_url: str | None) -> str:
    """The S3 service at ``endpoint_url`` (None or empty: AWS), as :class:`StoredAt.store` names it:
    a source and a destination on the same store may copy objects server-side."""
    return "s3 " + (endpoint_url.strip().rstrip("/").lower() if endpoint_url and endpoint_url.strip() else "aws")


def new_s3_client(config: Config, **client_kwargs: Any) -> Any:
    """An S3 client, made from one session per process under a lock (boto3 sessions are
    not thread-safe; the clients they make are). Credentials from the default chain
    (no keys in ``client_kwargs``) are therefore resolved once per process, as boto3's
    default session does.

    ``config`` is used as given, with :data:`USER_AGENT` unless it names its own;
    ``client_kwargs`` go to ``Session.client`` (endpoint, credentials, ``verify``...).
    """
    if config.user_agent is None:
        config = config.merge(Config(user_agent=USER_AGENT))
    with _session_lock:
        session, _ = _shared_session()
        return session.client("s3", config=config, **client_kwargs)


def shared_credentials() -> Any:
    """The credentials of the default chain, as the process's session resolved them for its
    clients (botocore ``Credentials``, refreshable or not); None when the chain finds none."""
    with _session_lock:
        session, _ = _shared_session()
        return session.get_credentials()
