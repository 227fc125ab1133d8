"""Byte links the device is served over: a pseudo-terminal, or a TCP port taking one client.

Writes never block the device: what the far end does not take is lost, as it would be from a
UART nobody reads. Framing resynchronises at the next 0x00, so a lost tail costs one frame.
"""

from __future__ import annotations

import contextlib
import os
import socket
import tty
from typing import Protocol


class Link(Protocol):
    url: str

    def fds(self) -> list[int]: ...

    def read(self, fd: int) -> bytes: ...

    def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...


class PtyLink:
    """A raw, no-echo pseudo-terminal; `url` is the path the host opens.

    The device keeps the terminal side open too, so hosts may open and close it again and again
    without a hang-up and without losing the raw settings.
    """

    def __init__(self) -> None:
        self._master, self._terminal = os.openpty()
        tty.setraw(self._terminal)
        os.set_blocking(self._master, False)
        self.url = os.ttyname(self._terminal)

    def fds(self) -> list[int]:
        return [self._master]

    def read(self, fd: int) -> bytes:
        try:
            return os.read(self._master, 4096)
        except OSError:
            return b""

    def write(self, data: bytes) -> None:
        with contextlib.suppress(OSError):  # terminal buffer full: nobody is reading
            os.write(self._master, data)

    def close(self) -> None:
        os.close(self._master)
        os.close(self._terminal)


class TcpLink:
    """A listening socket with at most one client; another is closed at once (device in use).

    When the client goes, the device carries on alone: its watchdog runs out as if the host had
    vanished, and the next client finds the state that was left.
    """

    def __init__(self, host: str, port: int) -> None:
        self._server = socket.create_server((host, port))
        self._server.setblocking(False)
        self._client: socket.socket | None = None
        self.url = f"socket://{host}:{self._server.getsockname()[1]}"

    def fds(self) -> list[int]:
        return [self._server.fileno()] + ([self._client.fileno()] if self._client else [])

    def read(self, fd: int) -> bytes:
        if fd == self._server.fileno():
            self._accept()
            return b""
        if self._client is None:
            return b""
        try:
            data = self._client.recv(4096)
        except BlockingIOError:
            return b""
        except OSError:
            data = b""
        if not data:
            self._drop_client()
        return data

    def write(self, data: bytes) -> None:
        if self._client is not None:
            try:
                self._client.send(data)
            except BlockingIOError:
                pass  # the client is not reading
            except OSError:
                self._drop_client()

    def close(self) -> None:
        self._drop_client()
        self._server.close()

    def _accept(self) -> None:
        try:
            conn, _ = self._server.accept()
        except BlockingIOError:
            return
        if self._client is not None:
            conn.close()
            return
        conn.setblocking(False)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._client = conn

    def _drop_client(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def open_link(listen: str) -> Link:
    """`pty` or `tcp:HOST:PORT` (PORT 0: any free port)."""
    if listen == "pty":
        return PtyLink()
    kind, _, address = listen.partition(":")
    host, _, port = address.rpartition(":")
    if kind != "tcp" or not host or not port.isdigit():
        raise ValueError(f"--listen must be 'pty' or 'tcp:HOST:PORT', not {listen!r}")
    return TcpLink(host, int(port))
