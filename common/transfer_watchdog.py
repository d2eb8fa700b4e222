"""A deadline for every remote read: one watchdog thread over the transfers in flight.

A socket timeout bounds one ``recv``; it does not bound a transfer. A server that
sends one byte every two seconds never trips a 30 s read timeout, and a thread
blocked in ``recv`` sees neither Ctrl-C nor ``--monitor-duration``. Every module's
chunk loop (s3, ftp, web, api) therefore runs inside :func:`watch`::

    with watch(f"GET {url}", ctx.stop, ctx.timeout_s, cut=lambda: shut(sock),
               stalled=lambda msg: MyTransientError(msg, uri=url)) as transfer:
        for chunk in body:
            transfer.arrived(len(chunk))
            sink.write(chunk)

One daemon thread looks at each watched transfer every :data:`TICK_S` seconds and
cuts it (calls ``cut``, which shuts its socket so the blocked read returns at once)
when:

* the run's stop event is set (Ctrl-C, SIGTERM, past ``--monitor-duration``): the
  block then raises :class:`~common.exceptions.TransferStopped` (not retried); or
* it is too slow (curl's ``--speed-limit``/``--speed-time``): in a window of
  ``timeout_s`` seconds fewer than ``timeout_s * MIN_RATE_BYTES_PER_S`` bytes
  arrived, i.e. its average rate over the window fell below 1 KiB/s, and no whole
  reply either (:meth:`Transfer.answered`: an FTP conversation of many short control
  replies is slow in bytes but alive). The block then
  raises ``stalled(message)``: the module's own transient error, so the retry
  policy tries the file again and, failing that, the file is ``failed``.

Progress is counted where the module's loop sees bytes, so a loop reading fixed
64 KiB blocks needs one block per window (64 KiB per ``timeout_s``) to count as alive.
Whatever the reader saw after a cut (an error, an early EOF that looks complete) is
replaced by the exception above: a cut transfer never yields a file.
"""

from __future__ import annotations

import functools
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Literal, ParamSpec, TypeVar

import structlog

from common.exceptions import TransferStopped

__all__ = ["MIN_RATE_BYTES_PER_S", "TICK_S", "Transfer", "ends_on_stop", "shut_response", "shut_socket", "watch"]

log = structlog.get_logger(__name__)
P = ParamSpec("P")
T = TypeVar("T")

#: A transfer averaging less than this over a window of ``timeout_s`` seconds is cut.
MIN_RATE_BYTES_PER_S = 1024
#: How often the watchdog looks at the transfers in flight (the delay before a cut).
TICK_S = 0.25


class Transfer:
    """One watched remote read. ``arrived(n)`` is the only call a chunk loop makes."""

    def __init__(self, what: str, stop: threading.Event, timeout_s: float, cut: Callable[[], None],
                 stalled: Callable[[str], Exception]) -> None:
        self.what = what
        self.stalled = stalled
        self.stop = stop
        self.timeout_s = timeout_s
        self._cut = cut
        self.bytes = 0
        self.aborted: Literal["stopped", "stalled"] | None = None
        self._window_start = time.monotonic()
        self._window_bytes = 0
        self._lock = threading.Lock()
        self._over = False
        self._answered = False

    def arrived(self, n: int) -> None:
        """``n`` more bytes came in (listing lines count too)."""
        self.bytes += n

    def answered(self) -> None:
        """A whole reply came in (an FTP control reply): the peer is alive, whatever its size.
        A conversation of many small replies (NLST's CWD/SIZE/MDTM per entry) is not a stall."""
        self._answered = True

    def _check(self, now: float) -> None:
        """Called by the watchdog thread: cut the transfer when the run stops or it stalls."""
        if self.aborted is not None:
            return
        if self.stop.is_set():
            self._abort("stopped")
            return
        if now - self._window_start < self.timeout_s:
            return
        got = self.bytes - self._window_bytes
        if got < self.timeout_s * MIN_RATE_BYTES_PER_S and not self._answered:
            self._abort("stalled")
            return
        self._window_start, self._window_bytes, self._answered = now, self.bytes, False

    def _abort(self, why: Literal["stopped", "stalled"]) -> None:
        with self._lock:  # never cut a socket the module has gone on to use for something else
            if self._over:
                return
            self.aborted = why
            try:
                self._cut()
            except Exception as exc:  # noqa: BLE001 - a socket already closed is fine; the reader is told anyway
                log.debug("transfer_cut_failed", what=self.what, error=f"{type(exc).__name__}: {exc}"[:200])

    def _end(self) -> None:
        with self._lock:
            self._over = True

    def stalled_message(self) -> str:
        return (f"{self.what}: too slow, under {MIN_RATE_BYTES_PER_S} bytes/s over {self.timeout_s:g} s "
                f"({self.bytes} bytes in all); cut")


class _Watchdog:
    """The process-wide thread; it runs only while some transfer is watched."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._transfers: set[Transfer] = set()
        self._thread: threading.Thread | None = None

    def add(self, transfer: Transfer) -> None:
        with self._lock:
            self._transfers.add(transfer)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="transfer-watchdog", daemon=True)
                self._thread.start()

    def remove(self, transfer: Transfer) -> None:
        with self._lock:
            self._transfers.discard(transfer)

    def _loop(self) -> None:
        while True:
            time.sleep(TICK_S)
            with self._lock:
                if not self._transfers:
                    self._thread = None
                    return
                transfers = list(self._transfers)
            now = time.monotonic()
            for transfer in transfers:
                transfer._check(now)


_watchdog = _Watchdog()


@contextmanager
def watch(what: str, stop: threading.Event, timeout_s: float, cut: Callable[[], None],
          stalled: Callable[[str], Exception]) -> Iterator[Transfer]:
    """Run the block as one watched transfer (see the module docstring).

    ``cut`` must make the block's blocked read return (shut its socket); it is called
    from the watchdog thread. ``stalled`` builds the module's transient error from a
    message. Raises TransferStopped when the run stopped meanwhile.
    """
    transfer = Transfer(what, stop, timeout_s, cut, stalled)
    if stop.is_set():
        raise TransferStopped(f"{what}: run stopping; not started", what=what)
    _watchdog.add(transfer)
    try:
        yield transfer
    except BaseException as exc:
        _raise_if_aborted(transfer, exc)
        raise
    finally:
        transfer._end()
        _watchdog.remove(transfer)
    _raise_if_aborted(transfer, None)


def _raise_if_aborted(transfer: Transfer, cause: BaseException | None) -> None:
    if transfer.aborted == "stopped":
        raise TransferStopped(f"{transfer.what}: run stopping; transfer cut", what=transfer.what) from cause
    if transfer.aborted == "stalled":
        log.debug("transfer_stalled", what=transfer.what, bytes=transfer.bytes, timeout_s=transfer.timeout_s)
        raise transfer.stalled(transfer.stalled_message()) from cause


def shut_socket(sock: socket.socket | None) -> None:
    """Shut both directions of ``sock`` so that a read blocked on it in another thread returns.

    ``close()`` from another thread does not wake a blocked ``recv`` on Linux; ``shutdown``
    does. The plain socket method is used on TLS sockets too: ``SSLSocket.shutdown`` would
    also drop its TLS state under the reading thread.
    """
    if sock is None:
        return
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass


def shut_response(response: object) -> None:
    """Shut the socket an HTTP response body is read from: a ``requests.Response``, a botocore
    ``StreamingBody`` or a urllib3 ``HTTPResponse``. Nothing when there is none (yet)."""
    raw = getattr(response, "raw", None) or getattr(response, "_raw_stream", None) or response
    connection = getattr(raw, "connection", None) or getattr(raw, "_connection", None)
    shut_socket(getattr(connection, "sock", None))


def ends_on_stop(fetch: Callable[P, Iterator[T]]) -> Callable[P, Iterator[T]]:
    """Decorate a module's ``fetch``: a read cut because the run stopped ends the generator
    quietly, as stopping between files does (the framework then marks the job stopped)."""

    @functools.wraps(fetch)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> Iterator[T]:
        try:
            yield from fetch(*args, **kwargs)
        except TransferStopped as exc:
            log.info("fetch_stopped", what=getattr(exc, "what", None))

    return wrapper
