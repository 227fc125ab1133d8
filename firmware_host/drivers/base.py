"""The one small interface every byte path implements (serial, socket, in-process, USB)."""

from __future__ import annotations

import abc
import warnings


class Transport(abc.ABC):
    """A full-duplex byte stream to one device.

    `read` may be called from one reader thread while `write` is called from others;
    implementations must allow exactly that and nothing more. Timeouts follow pyserial:
    a number of seconds; `read` returns b"" when nothing arrived in time.
    """

    url: str
    simulated: bool = False
    """True only for the built-in simulated device in this process: nobody can be connected to it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._closed = False

    @abc.abstractmethod
    def read(self, timeout: float) -> bytes:
        """Bytes available within `timeout` seconds (b"" if none); raises TransportClosed."""

    @abc.abstractmethod
    def write(self, data: bytes) -> None:
        """Write all of `data` or raise TransportError/TransportClosed."""

    @abc.abstractmethod
    def _close(self) -> None:
        """Release the underlying resource (called once)."""

    def discard_input(self) -> None:
        """Drop stale bytes a previous session left in the receive path."""
        while self.read(0.0):
            pass

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Idempotent: safe to call twice, from any thread."""
        if not self._closed:
            self._closed = True
            self._close()

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            warnings.warn(f"transport {self.url} was not closed", ResourceWarning, stacklevel=1)
            self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<{type(self).__name__} {self.url} {state}>"
