"""Serial transport over pyserial: device paths, /dev/pts/N, socket://, rfc2217://, loop:// and friends."""

from __future__ import annotations

import errno
import logging
import socket
from urllib.parse import urlsplit

import serial
import serial.rfc2217

from ..errors import DeviceBusy, DeviceNotFound, TransportClosed, TransportError
from .base import Transport
from .claim import EndpointClaim

log = logging.getLogger(__name__)

DEFAULT_BAUD = 115200
WRITE_TIMEOUT_S = 1.0
TCP_SCHEMES = ("socket", "rfc2217")


class SerialTransport(Transport):
    """Any pyserial URL, opened so that two controllers never drive one device: a device file
    is locked by its inode whatever URL names it (a path, a symlink, spy://, alt://,
    hwgrep://), a TCP endpoint is claimed on this computer before it is connected (claim.py).

    `label` is how messages name the device when the URL is not what the user gave (an
    `lg://PLACE` resolved to its port)."""

    def __init__(self, url: str, baudrate: int = DEFAULT_BAUD, label: str | None = None) -> None:
        super().__init__(label or url)
        self._closed = True  # until open succeeds
        parts = urlsplit(url) if "://" in url else None
        self._claim = None
        if parts is not None and parts.scheme in TCP_SCHEMES and parts.hostname and parts.port:
            self._claim = EndpointClaim(self.url, parts.hostname, parts.port)
        try:
            self._port = _open(url, self.url, baudrate)
        except BaseException:
            if self._claim is not None:
                self._claim.release()
            raise
        sock = getattr(self._port, "_socket", None)
        if isinstance(sock, socket.socket):
            # an ESTOP must not wait behind Nagle's algorithm for earlier segments' ACKs
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._closed = False

    def read(self, timeout: float) -> bytes:
        port = self._port
        try:
            port.timeout = max(timeout, 0.0)
            first = port.read(1)
            if not first:
                return b""
            waiting = port.in_waiting
            return first + port.read(waiting) if waiting else first
        except (serial.SerialException, OSError, TypeError, AttributeError) as exc:
            # TypeError/AttributeError: pyserial's posix read after a concurrent close.
            raise TransportClosed(f"{self.url}: the connection closed (the device was unplugged, switched off "
                                  "or stopped)") from exc

    def write(self, data: bytes) -> None:
        try:
            written = self._port.write(data)
        except serial.SerialTimeoutException as exc:
            raise TransportError(f"{self.url}: write timed out (device not reading)") from exc
        except (serial.SerialException, OSError, TypeError, AttributeError) as exc:
            raise TransportClosed(f"{self.url}: write failed: {exc}") from exc
        if written is not None and written != len(data):
            raise TransportError(f"{self.url}: wrote {written} of {len(data)} bytes")

    def discard_input(self) -> None:
        try:
            self._port.reset_input_buffer()
        except (serial.SerialException, OSError) as exc:
            raise TransportClosed(f"{self.url}: {exc}") from exc
        super().discard_input()

    def _close(self) -> None:
        try:
            self._port.close()
        except (serial.SerialException, OSError):
            pass
        if self._claim is not None:
            self._claim.release()


class Rfc2217Port(serial.rfc2217.Serial):
    """pyserial's RFC 2217 client, made for a link that reads often and needs no modem lines.

    The read timeout stays on this side: pyserial 3.5 renegotiates every port setting with the
    server (50 ms or more) whenever the timeout is set, which `SerialTransport.read` does on
    every call (labgrid's `pyserial-labgrid` fork, which may be installed as `serial` instead,
    carries the same fix). Control commands (DTR, RTS, flow control) are sent, not awaited:
    the ICD uses none of them, and ser2net in front of a pty refuses them (pyserial would wait
    3 s for an answer, or sleep 0.1 s per command with `ign_set_control`)."""

    @property
    def timeout(self) -> float | None:
        return self._timeout

    @timeout.setter
    def timeout(self, value: float | None) -> None:
        self._timeout = value

    def rfc2217_set_control(self, value: bytes) -> None:
        self._rfc2217_options["control"].set(value)

    server_hung_up = False  # the server closed the connection (reads then fail as closed)

    def _telnet_read_loop(self) -> None:
        """pyserial's reader thread; a server that drops the connection, even while it answers
        a negotiation, ends it quietly (no traceback on stderr) and is remembered."""
        try:
            super()._telnet_read_loop()
        except OSError as exc:
            log.info("%s: the RFC 2217 server closed the connection: %s", self.portstr, exc)
        self.server_hung_up = self.is_open  # still open on this side: the other side went


def _open(url: str, label: str, baudrate: int) -> serial.SerialBase:
    """The pyserial port for `url`, open. A device file is locked (`exclusive`, an flock on its
    inode) before pyserial configures or flushes it, so a refused second controller changes
    nothing under the running session."""
    port: serial.SerialBase | None = None
    try:
        if url.startswith("rfc2217://"):
            port = Rfc2217Port(None, baudrate=baudrate, timeout=0)
            port.port = url
        else:
            port = serial.serial_for_url(url, baudrate=baudrate, timeout=0, write_timeout=WRITE_TIMEOUT_S,
                                         do_not_open=True)
            if isinstance(port, serial.Serial):  # a device file, by whatever URL (spy://, alt://, a symlink)
                port.exclusive = True
        port.open()
    except serial.SerialException as exc:
        if isinstance(port, Rfc2217Port) and port.server_hung_up:
            raise _hung_up(label) from exc
        raise _translate_open_error(label, exc) from exc
    except ValueError as exc:
        if "not known" in str(exc):  # pyserial: "invalid URL, protocol 'foo' not known"
            raise DeviceNotFound(f"{label} is not a device address: use sim://, a serial port such as /dev/ttyUSB0, "
                                 "socket://HOST:PORT (or tcp://HOST:PORT), rfc2217://HOST:PORT, lg://PLACE or "
                                 "usb://VID:PID") from exc
        raise TransportError(f"cannot open {label}: {exc}") from exc
    except OSError as exc:
        if exc.errno in (errno.EPIPE, errno.ECONNRESET):
            raise _hung_up(label) from exc
        raise TransportError(f"cannot open {label}: {exc}") from exc
    if isinstance(port, Rfc2217Port):
        port._socket.settimeout(WRITE_TIMEOUT_S)  # noqa: SLF001 - a stalled network fails a write as a port does
    return port


def _hung_up(label: str) -> DeviceBusy:
    """ser2net at its max-connections accepts a client, then closes it at once."""
    return DeviceBusy(f"{label}: the server closed the connection at once: the device is in use by another program "
                      "(or its server is shutting down)")


def _translate_open_error(url: str, exc: serial.SerialException) -> TransportError:
    code = getattr(exc, "errno", None)
    text = str(exc)
    if code in (errno.ENOENT, errno.ENODEV, errno.ENXIO) or "No such file" in text:
        return DeviceNotFound(f"no device at {url}")
    if "exclusively lock" in text or code in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EBUSY):
        return DeviceBusy(f"{url} is in use by another program")
    if code == errno.ECONNREFUSED or "Connection refused" in text:
        return DeviceNotFound(f"nothing is listening at {url} (connection refused): is the device or simulator running?")
    if code == errno.EACCES:
        return TransportError(f"permission denied opening {url} (add your user to the dialout group)")
    return TransportError(f"cannot open {url}: {text}")
