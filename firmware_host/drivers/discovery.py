"""Which stimulators can this computer reach: serial ports, our USB devices, and `sim://`.

Serial numbers are listed so a clinic with two stimulators on one laptop can tell them
apart and open the right one by URL (`usb://1209:0001/SN0042`).
"""

from __future__ import annotations

import dataclasses
import errno
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import usb.core
import usb.util
from serial.tools.list_ports import comports

from .usb import KNOWN_IDS, UDEV_HELP, find_backend, read_serial, usb_url

log = logging.getLogger(__name__)

Kind = Literal["usb", "serial", "sim"]


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """One reachable device; plain fields only, so `as_dict()` goes straight to JSON."""

    url: str
    kind: Kind
    description: str
    vid: int | None = None
    pid: int | None = None
    serial_number: str | None = None
    known: bool = False  # VID/PID is one of this product's
    problem: str | None = None  # why it may not open (e.g. permissions), else None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def list_devices(known: Iterable[tuple[int, int]] = KNOWN_IDS, usb_backend: Any = None) -> list[DeviceInfo]:
    """Our USB devices (VID/PID in `known`), then every serial port (ours first), then `sim://`.

    `usb_backend` is a pyusb backend to search instead of the system's (tests pass a simulated bus).
    """
    ids = frozenset(known)
    ports = sorted(_serial_ports(ids), key=lambda info: (not info.known, info.url))
    sim = DeviceInfo("sim://", "sim", "built-in simulated stimulator")
    return [*_usb_devices(ids, usb_backend), *ports, sim]


def format_devices(devices: Iterable[DeviceInfo]) -> str:
    """A table for `estim devices`; `*` marks this product's VID/PID, problems follow their row."""
    rows = [("", "URL", "KIND", "VID:PID", "SERIAL", "DESCRIPTION")]
    problems: dict[int, str] = {}
    for info in devices:
        ids = f"{info.vid:04x}:{info.pid:04x}" if info.vid is not None and info.pid is not None else "-"
        rows.append(("*" if info.known else "", info.url, info.kind, ids, info.serial_number or "-", info.description))
        if info.problem:
            problems[len(rows) - 1] = info.problem
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for index, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
        if index in problems:
            lines.extend("    ! " + line for line in problems[index].splitlines())
    return "\n".join(lines)


def _serial_ports(known: frozenset[tuple[int, int]]) -> list[DeviceInfo]:
    return [
        DeviceInfo(
            url=port.device,
            kind="serial",
            description=port.description or "",
            vid=port.vid,
            pid=port.pid,
            serial_number=port.serial_number,
            known=(port.vid, port.pid) in known,
        )
        for port in comports()
    ]


def _usb_devices(known: frozenset[tuple[int, int]], backend: Any) -> list[DeviceInfo]:
    try:
        found = list(usb.core.find(
            find_all=True,
            backend=backend if backend is not None else find_backend(),
            custom_match=lambda d: (d.idVendor, d.idProduct) in known,
        ))
    except usb.core.NoBackendError:
        log.warning("no libusb found: USB stimulators are not listed (pip install libusb-package)")
        return []
    devices = []
    for device in found:
        serial, problem = None, None
        try:
            serial = read_serial(device)
        except usb.core.USBError as exc:
            problem = _usb_problem(exc)
        finally:
            usb.util.dispose_resources(device)
        devices.append(DeviceInfo(
            url=usb_url(device.idVendor, device.idProduct, serial),
            kind="usb",
            description="needle e-stim stimulator (USB)",
            vid=device.idVendor,
            pid=device.idProduct,
            serial_number=serial,
            known=True,
            problem=problem,
        ))
    return devices


def _usb_problem(exc: Exception) -> str:
    if getattr(exc, "errno", None) == errno.EACCES:
        return f"permission denied; {UDEV_HELP}"
    return f"cannot read its serial number: {exc}"
