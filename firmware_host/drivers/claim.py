"""One controller per network device on this computer: an advisory lock per TCP endpoint.

A device file is locked by its inode when pyserial opens it (`flock`, see serial_port.py),
whatever URL names it. A device behind TCP (`socket://`, `tcp://`, `rfc2217://`, and `lg://`
places, which resolve to one) has no inode here and RFC 2217 has no lock of its own; ser2net
as labgrid's exporter runs it accepts up to 10 clients at once. So the host takes a lock file
per address the endpoint's name resolves to, before it connects: a second controller on this
computer is refused "in use" without sending a byte (an RFC 2217 open would otherwise purge
the port's buffers under the running session). Other computers are kept out only by the
reservation (`lg://PLACE`); hil_tests/README.md says what that does and does not guarantee.
"""

from __future__ import annotations

import fcntl
import os
import socket
import tempfile
from pathlib import Path

from ..errors import DeviceBusy, DeviceNotFound, TransportError

LOCK_PREFIX = "needle-estim-tcp-"


def lock_dir() -> Path:
    """Shared by every user of this computer (a per-user directory would let two users in)."""
    run_lock = Path("/run/lock")
    return run_lock if os.access(run_lock, os.W_OK | os.X_OK) else Path(tempfile.gettempdir())


class EndpointClaim:
    """Holds `host:port` for this process until `release()` (or the process ends)."""

    def __init__(self, url: str, host: str, port: int) -> None:
        self._fds: list[int] = []
        try:
            addresses = sorted({info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)})
        except (socket.gaierror, UnicodeError) as exc:
            raise DeviceNotFound(f"{url}: no such host {host!r} ({exc})") from exc
        try:
            for address in addresses:  # every address: "localhost" and "127.0.0.1" are one device
                self._fds.append(_locked(lock_dir() / f"{LOCK_PREFIX}{address.replace(':', '_')}-{port}.lock"))
        except BlockingIOError:
            self.release()
            raise DeviceBusy(f"{url} is in use by another controller on this computer") from None
        except OSError as exc:
            self.release()
            raise TransportError(f"{url}: cannot take this computer's lock on it ({exc})") from exc

    def release(self) -> None:
        while self._fds:
            os.close(self._fds.pop())  # closing the only descriptor drops the lock


def _locked(path: Path) -> int:
    """A descriptor of `path` holding an exclusive flock (BlockingIOError if another holds it).

    Opened read-only, without O_CREAT once it exists: a lock file another user made stays
    usable in a sticky, protected directory such as /tmp."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except FileExistsError:  # another controller made it just now
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise
    return fd
