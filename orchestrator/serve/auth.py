"""Who may call ``serve``: bearer tokens with scopes, and a token-bucket rate limit per client.

Tokens come from three places, all optional, merged:

* ``MODULE_SYSTEM_API_TOKEN``: one token with both scopes (``read``, ``operate``);
* ``MODULE_SYSTEM_API_READ_TOKEN``: one token with ``read`` only;
* ``--tokens-file FILE`` (``$MODULE_SYSTEM_API_TOKENS_FILE``): one token a line, then its scopes
  separated by commas (``s3cr3t-token read,operate``); blank lines and ``#`` comments are skipped.

With no token at all every endpoint is open (and ``serve`` only binds a loopback address).
Once any token is configured, the GET endpoints (and ``/metrics``) need ``read`` and the
mutating ones need ``operate``: a missing or unknown token is 401, a token without the scope
403. A browser page sends the token as the ``ms_token`` cookie that ``/login`` sets
(``HttpOnly``, ``SameSite=Strict``); a mutating call authenticated only by that cookie must also
carry the ``X-Module-System-Dashboard`` header, which a cross-site form cannot send.

Tokens are held as SHA-256 digests, registered as secrets (so the log redaction masks them),
and never printed or logged.
"""

from __future__ import annotations

import hashlib
import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from common.exceptions import ConfigError
from common.secret import Secret

__all__ = [
    "COOKIE", "DASHBOARD_HEADER", "SCOPES", "RateLimiter", "TokenBucket", "Tokens", "load_tokens",
]

SCOPES = ("read", "operate")
COOKIE = "ms_token"
DASHBOARD_HEADER = "X-Module-System-Dashboard"
ENV_TOKEN = "MODULE_SYSTEM_API_TOKEN"
ENV_READ_TOKEN = "MODULE_SYSTEM_API_READ_TOKEN"
MIN_TOKEN_LENGTH = 16


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class Tokens:
    """The configured tokens, by digest: their scopes."""

    scopes_by_digest: Mapping[str, frozenset[str]]

    @property
    def configured(self) -> bool:
        return bool(self.scopes_by_digest)

    def scopes(self, token: str) -> frozenset[str] | None:
        """The token's scopes, or None when it is not one of ours."""
        return self.scopes_by_digest.get(_digest(token))

    @staticmethod
    def digest(token: str) -> str:
        return _digest(token)


def load_tokens(tokens_file: Path | None, environ: Mapping[str, str] | None = None) -> Tokens:
    """The tokens of the environment and ``tokens_file``; ConfigError naming the file, the line
    and what is wrong (never the token)."""
    env = os.environ if environ is None else environ
    found: dict[str, set[str]] = {}

    def add(token: str, scopes: Iterable[str], where: str) -> None:
        if len(token) < MIN_TOKEN_LENGTH:
            raise ConfigError(f"{where}: a token must be at least {MIN_TOKEN_LENGTH} characters long")
        Secret(token)  # known to the log redaction from now on
        found.setdefault(_digest(token), set()).update(scopes)

    if env.get(ENV_TOKEN):
        add(env[ENV_TOKEN].strip(), SCOPES, f"${ENV_TOKEN}")
    if env.get(ENV_READ_TOKEN):
        add(env[ENV_READ_TOKEN].strip(), ("read",), f"${ENV_READ_TOKEN}")
    if tokens_file is not None:
        try:
            lines = tokens_file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
            raise ConfigError(f"--tokens-file {tokens_file}: cannot be read: {reason}") from None
        for number, line in enumerate(lines, 1):
            text = line.split("#", 1)[0].strip()
            if not text:
                continue
            parts = text.split(None, 1)
            where = f"--tokens-file {tokens_file}: line {number}"
            if len(parts) != 2:
                raise ConfigError(f"{where}: expected 'TOKEN SCOPES' (scopes: read, operate, comma-separated)")
            scopes = {s.strip() for s in parts[1].split(",") if s.strip()}
            unknown = sorted(scopes - set(SCOPES))
            if unknown or not scopes:
                raise ConfigError(f"{where}: unknown scope {', '.join(unknown) or '(none)'}; known: read, operate")
            add(parts[0], scopes, where)
    return Tokens({digest: frozenset(scopes) for digest, scopes in found.items()})


class TokenBucket:
    """``capacity`` requests at once, refilled at ``rate`` requests a second."""

    def __init__(self, capacity: float, rate: float, now: float) -> None:
        self.capacity, self.rate = capacity, rate
        self.level, self.at = capacity, now

    def take(self, now: float) -> float:
        """0 when a request may go now (and it is counted); else the seconds until one may."""
        self.level = min(self.capacity, self.level + (now - self.at) * self.rate)
        self.at = now
        if self.level >= 1:
            self.level -= 1
            return 0.0
        return (1 - self.level) / self.rate


class RateLimiter:
    """One :class:`TokenBucket` per client (its token's digest, else its address): ``per_minute``
    mutating requests a minute, as a burst or spread. The least recently seen clients are
    forgotten past ``max_clients``. ``per_minute`` 0: no limit."""

    def __init__(self, per_minute: int, max_clients: int = 10_000) -> None:
        self.per_minute = per_minute
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self._max_clients = max_clients
        self._lock = threading.Lock()

    def retry_after(self, client: str) -> int:
        """0 when ``client`` may go on; else whole seconds to wait (the Retry-After header)."""
        if self.per_minute <= 0:
            return 0
        now = time.monotonic()
        with self._lock:
            bucket = self._buckets.get(client)
            if bucket is None:
                bucket = self._buckets[client] = TokenBucket(self.per_minute, self.per_minute / 60.0, now)
                if len(self._buckets) > self._max_clients:
                    self._buckets.popitem(last=False)
            else:
                self._buckets.move_to_end(client)
            wait = bucket.take(now)
        return max(1, math.ceil(wait)) if wait > 0 else 0
