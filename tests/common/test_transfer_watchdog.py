"""The transfer watchdog on real sockets: a stopping run and a stalled peer cut a blocked read."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from common.exceptions import TransferStopped
from common.transfer_watchdog import ends_on_stop, shut_socket, watch


class Stalled(Exception):
    pass


def read_all(sock: socket.socket, stop: threading.Event, timeout_s: float) -> int:
    """Read ``sock`` to its end under the watchdog; the bytes read."""
    with watch("test read", stop, timeout_s, cut=lambda: shut_socket(sock), stalled=Stalled) as transfer:
        while data := sock.recv(4096):
            transfer.arrived(len(data))
    return transfer.bytes


@pytest.fixture()
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    a.settimeout(30)
    yield a, b
    a.close()
    b.close()


def test_a_stopping_run_cuts_a_blocked_read(pair: tuple[socket.socket, socket.socket]) -> None:
    """After the cut the recv returns b"" like a clean end: the watch must not take it for one."""
    reader, _ = pair
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    with pytest.raises(TransferStopped):
        read_all(reader, stop, timeout_s=30)


def test_a_dripping_peer_is_cut_as_stalled(pair: tuple[socket.socket, socket.socket]) -> None:
    reader, writer = pair
    done = threading.Event()

    def drip() -> None:
        while not done.wait(0.05):
            try:
                writer.send(b"x")
            except OSError:
                return

    threading.Thread(target=drip, daemon=True).start()
    try:
        with pytest.raises(Stalled, match="too slow"):
            read_all(reader, threading.Event(), timeout_s=0.5)
    finally:
        done.set()


def test_a_transfer_that_keeps_up_is_not_cut(pair: tuple[socket.socket, socket.socket]) -> None:
    reader, writer = pair
    payload = b"y" * (1 << 20)

    def send() -> None:
        writer.sendall(payload)
        writer.shutdown(socket.SHUT_WR)

    threading.Thread(target=send, daemon=True).start()
    assert read_all(reader, threading.Event(), timeout_s=0.5) == len(payload)


def test_ends_on_stop_ends_a_fetch_quietly() -> None:
    @ends_on_stop
    def fetch() -> Iterator[int]:
        yield 1
        raise TransferStopped("cut", what="x")

    assert list(fetch()) == [1]
