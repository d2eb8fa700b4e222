"""boto3 S3 clients as module_system makes them: named, and without per-request work that buys nothing.

Both S3 clients of a run (the uploader's and the S3 source module's) come from
:func:`new_s3_client`, made from one boto3 session per process, so the service model is
parsed once. Each is an ordinary boto3 client with two differences, both
measured on the benchmark's small files (``bench/README.md``), where botocore's own work
per request is most of the client's CPU:

* **Its User-Agent is** ``module_system/<version> Python/<version>``, set through
  ``Config(user_agent=...)`` (boto3 appends ``Botocore/<version>``): the store's access
  logs show which tool called, as they show ``rclone/v1.60`` for rclone. Botocore
  rebuilds its default header from about 30 components twice per request (~0.15 ms
  each time); a configured one is a constant.
* **Endpoint rules are evaluated once per bucket, not once per key.** S3's endpoint
  ruleset declares ``Key``, ``Prefix`` and ``CopySource`` as parameters but no rule
  reads them (botocore 1.43); since botocore passes them to the provider anyway, its
  endpoint cache misses on every new key (~0.2 ms of rule evaluation per request).
  :func:`drop_unread_endpoint_params` removes from the client's resolver the parameters
  that the ruleset, read from botocore's own data, never mentions. A botocore whose
  rules do read one keeps it: the check is made against the rules it ships, once per
  process. botocore 1.44 does the same for S3 itself (``S3_UNREFERENCED_PARAMS``); with
  it this step finds nothing left to drop.
"""

from __future__ import annotations

import json
import platform
import re
import threading
from typing import Any

import boto3.session
import botocore.loaders
import botocore.session
from botocore.config import Config

__all__ = ["USER_AGENT", "drop_unread_endpoint_params", "new_s3_client", "unread_endpoint_params"]


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
        session, core = _shared_session()
        client = session.client("s3", config=config, **client_kwargs)
        drop_unread_endpoint_params(client, core.get_component("data_loader"))
    return client


def unread_endpoint_params(service: str, loader: Any = None) -> frozenset[str]:
    """Parameters that ``service``'s endpoint ruleset declares and no rule mentions.

    A parameter counts as mentioned when its name appears anywhere in the rules as a
    word (a ``ref``, a ``{Name}`` template, even inside an error message), so the answer
    errs towards keeping a parameter. ``loader`` is botocore's data loader to read the
    ruleset with (a new one by default); the answer is kept per service.
    """
    known = _unread.get(service)
    if known is None:
        ruleset = (loader or botocore.loaders.create_loader()).load_service_model(service, "endpoint-rule-set-1")
        words = set(re.findall(r"\w+", json.dumps(ruleset.get("rules", []))))
        known = _unread[service] = frozenset(name for name in ruleset.get("parameters", {}) if name not in words)
    return known


_unread: dict[str, frozenset[str]] = {}


def drop_unread_endpoint_params(client: Any, loader: Any = None) -> frozenset[str]:
    """Stop ``client`` from passing unread parameters to its endpoint provider; returns them.

    The provider caches its answers by parameters, so without a per-key parameter every
    object of a bucket hits that cache. A client whose botocore does not have the
    expected resolver is left as it is (empty answer): the optimisation is lost, never
    the correctness.
    """
    resolver = getattr(client, "_ruleset_resolver", None)
    definitions = getattr(resolver, "_param_definitions", None)
    if not isinstance(definitions, dict):
        return frozenset()
    unread = unread_endpoint_params(client.meta.service_model.service_name, loader) & definitions.keys()
    if unread:
        resolver._param_definitions = {name: d for name, d in definitions.items() if name not in unread}
    return frozenset(unread)
