"""Transport over a connected stream socket; carries the in-process simulated device (`sim://`)."""

from __future__ import annotations

import select
import socket
from collections.abc import Callable

from ..errors import TransportClosed
from .base import Transport


class SocketTransport(Transport):
    """One end of a connected socket; `on_close` releases whatever serves the other end."""

    def __init__(self, url: str, sock: socket.socket, on_close: Callable[[], None] | None = None,
                 simulated: bool = False) -> None:
        super().__init__(url)
        self.simulated = simulated
        self._sock = sock
        self._on_close = on_close

    def read(self, timeout: float) -> bytes:
        try:
            ready, _, _ = select.select([self._sock], [], [], max(timeout, 0.0))
            if not ready:
                return b""
            data = self._sock.recv(4096)
        except (OSError, ValueError) as exc:
            raise TransportClosed(f"{self.url}: the connection closed (the device was unplugged, switched off "
                                  "or stopped)") from exc
        if not data:
            raise TransportClosed(f"{self.url}: the device end closed")
        return data

    def write(self, data: bytes) -> None:
        try:
            self._sock.sendall(data)
        except (OSError, ValueError) as exc:
            raise TransportClosed(f"{self.url}: write failed: {exc}") from exc

    def _close(self) -> None:
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        if self._on_close is not None:
            self._on_close()
