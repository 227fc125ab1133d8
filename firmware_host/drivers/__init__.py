"""Transports chosen by URL scheme, imported lazily so a missing backend fails only when chosen.

- `sim://[?key=value&...]`  the built-in simulated device, in this process (overrides as in
  ICD.md section 7, e.g. `sim://?channels=2&watchdog_ms=500`)
- `usb://VID:PID[/SERIAL]`  a vendor-specific USB device (bulk endpoint pair)
- `tcp://HOST:PORT`          the same as pyserial's `socket://HOST:PORT` (a device or
                             simulator listening on TCP)
- `lg://PLACE`               the stimulator of a labgrid place this user has acquired on this
                             computer (`needle-estim[lab]`; coordinator from LG_COORDINATOR)
- anything else              a pyserial URL or path: `/dev/ttyUSB0`, `/dev/pts/3`,
                             `socket://127.0.0.1:5000`, `rfc2217://HOST:PORT` (ser2net),
                             `spy:///dev/ttyUSB0`, `loop://`
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

from ..errors import DeviceNotFound, TransportError
from .base import Transport

__all__ = ["Transport", "open_transport"]


def open_transport(url: str) -> Transport:
    """Open the byte path named by `url`; raises a TransportError subclass on failure."""
    scheme = urlsplit(url).scheme if "://" in url else ""
    if scheme == "tcp":
        url, scheme = "socket://" + url.removeprefix("tcp://"), "socket"
    if scheme == "sim":
        return _open_sim(url)
    if scheme == "usb":
        from .usb import UsbTransport

        return UsbTransport(url)
    from .serial_port import SerialTransport

    if scheme == "lg":
        return SerialTransport(_place_port(url), label=url)
    return SerialTransport(url)


def _place_port(url: str) -> str:
    """The URL of the port of the labgrid place named by `lg://PLACE` (refused unless acquired)."""
    try:
        from ..lab import place_port
    except ImportError as exc:
        raise DeviceNotFound(f"{url}: lab places need labgrid: pip install 'needle-estim[lab]'") from exc
    return place_port(url).url


def _open_sim(url: str) -> Transport:
    from ..sim import SimConfig, start_in_process
    from .socket_pair import SocketTransport

    try:
        config = SimConfig.from_overrides(dict(parse_qsl(urlsplit(url).query, strict_parsing=False)))
    except ValueError as exc:
        raise TransportError(f"{url}: {exc}") from exc
    sock, stop, _device = start_in_process(config)
    return SocketTransport(url, sock, on_close=stop, simulated=True)
