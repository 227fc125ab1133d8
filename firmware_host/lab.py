"""labgrid: a rig's stimulator as a place that any machine can reserve (`needle-estim[lab]`).

On a rig host, labgrid's exporter publishes the stimulator's serial port (through ser2net,
as RFC 2217) and its coordinator keeps places, their tags and who holds them. Here:

- `EstimDriver`, a labgrid driver bound to the target's `NetworkSerialPort` (or a local
  `RawSerialPort` / `USBSerialPort`); `url()` is the device URL the host opens. It opens
  nothing itself: the host's transport opens the port, exclusively. An environment file
  names it (`imports: [firmware_host.lab]`, `drivers: {EstimDriver: {}}`) or leaves it out,
  and `port_of(target)` binds one to the target's only serial port, or the one named
  `stimulator`.
- `place_port("lg://PLACE")`: a place's port and tags (what the rig is), refused unless this
  user on this computer has acquired the place: labgrid's own check, on labgrid's
  `RemotePlace`, with the coordinator from `LG_COORDINATOR`. `lg://+` is the place
  reserved under `LG_TOKEN`, as for `labgrid-client -p +`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import attr
from labgrid import Target
from labgrid.driver.common import Driver
from labgrid.factory import target_factory
from labgrid.remote.client import Error as LabgridError
from labgrid.remote.client import UserError
from labgrid.resource import NetworkSerialPort, SerialPort
from labgrid.resource.remote import RemotePlace, RemotePlaceManager
from labgrid.util.proxy import proxymanager

from .errors import DeviceBusy, DeviceNotFound, PlaceNotAcquired

log = logging.getLogger(__name__)

SCHEME = "lg://"
STIMULATOR = "stimulator"
"""The resource name that picks the stimulator's port when a place has several serial ports."""
URL_SCHEMES = {"rfc2217": "rfc2217", "raw": "socket"}


@dataclass(frozen=True)
class PlacePort:
    """Where the stimulator of a target is, and what its place says the rig is."""

    url: str
    place: str | None = None
    tags: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"place": self.place, "tags": dict(self.tags), "port": self.url}


@target_factory.reg_driver
@attr.s(eq=False)
class EstimDriver(Driver):
    """The stimulator's serial port on a labgrid target, as the device URL the host opens."""

    bindings = {"port": {"SerialPort", "NetworkSerialPort"}}

    @Driver.check_active
    def url(self) -> str:
        if isinstance(self.port, SerialPort):
            return str(self.port.port)
        scheme = URL_SCHEMES.get(self.port.protocol)
        if scheme is None:
            raise DeviceNotFound(f"the stimulator's port is published as {self.port.protocol!r}: the host speaks "
                                 "rfc2217 and raw TCP")
        host, port = proxymanager.get_host_and_port(self.port)
        return f"{scheme}://{host}:{port}"


def port_of(target: Target) -> PlacePort:
    """The target's stimulator port, through its EstimDriver (bound here if its environment
    names none), and its place's name and tags when it is a labgrid place."""
    drivers = [d for d in target.drivers if isinstance(d, EstimDriver)]
    driver = drivers[0] if drivers else _bind(target)
    target.activate(driver)
    place = next((r for r in target.resources if isinstance(r, RemotePlace)), None)
    if place is None:
        return PlacePort(driver.url())
    return PlacePort(driver.url(), _place_name(place.name), {str(k): str(v) for k, v in place.tags.items()})


def _bind(target: Target) -> EstimDriver:
    ports = [r for r in target.resources if isinstance(r, (SerialPort, NetworkSerialPort))]
    if len(ports) > 1:
        if STIMULATOR not in {r.name for r in ports}:
            raise DeviceNotFound(
                f"{target.name} has {len(ports)} serial ports ({', '.join(sorted(str(r.name) for r in ports))}): name "
                f"the stimulator's {STIMULATOR!r} (labgrid-client -p PLACE add-named-match EXPORTER/GROUP/"
                f"NetworkSerialPort {STIMULATOR})")
        target.set_binding_map({"port": STIMULATOR})
    elif not ports:
        raise DeviceNotFound(f"{target.name} has no serial port: its place matches no NetworkSerialPort")
    return EstimDriver(target, None)


def place_port(url: str) -> PlacePort:
    """The port of the place `lg://PLACE` names exactly; PlaceNotAcquired or DeviceBusy unless
    this user on this computer holds it, DeviceNotFound when there is no such place or no
    coordinator answers."""
    name = url.removeprefix(SCHEME).strip("/")
    if not url.startswith(SCHEME) or not name:
        raise DeviceNotFound(f"{url}: give a lab place as lg://PLACE")
    target = Target(url)
    try:
        target_factory.make_resource(target, "RemotePlace", name, {})
        found = port_of(target)
    except UserError as exc:
        raise _refusal(url, name) from exc
    except (LabgridError, ConnectionError) as exc:
        log.info("%s: %s", url, exc)
        if RemotePlaceManager.get().session is None:
            raise DeviceNotFound(f"{url}: no lab coordinator answers at {_coordinator()} "
                                 "(set LG_COORDINATOR=HOST:PORT)") from exc
        raise DeviceNotFound(f"{url}: the place's stimulator port is not published: its rig host's exporter is not "
                             "running, or lost the port") from exc
    if name != "+" and found.place != name:
        raise _not_exactly(url, name, found.place)
    return found


def _not_exactly(url: str, name: str, place: str | None) -> DeviceNotFound:
    """labgrid takes a place name as a pattern; a device URL must name its device exactly."""
    return DeviceNotFound(f"{url}: no place is named exactly {name!r} (did you mean lg://{place}?)")


def _refusal(url: str, name: str) -> Exception:
    """Why labgrid refused the place, in the host's terms (nothing was opened)."""
    place = _find(name)
    if place is None:
        if name == "+":
            return DeviceNotFound(f"{url}: no place is reserved under LG_TOKEN (labgrid-client reserve --wait ...)")
        return DeviceNotFound(f"{url}: the lab coordinator at {_coordinator()} has no place {name!r}")
    if name != "+" and place.name != name:
        return _not_exactly(url, name, place.name)
    if not place.acquired:
        return PlaceNotAcquired(f"{url}: the place {place.name} is not acquired: acquire it first "
                                f"(labgrid-client -p {place.name} acquire)")
    host, _, user = place.acquired.partition("/")
    return DeviceBusy(f"{url} is in use: the place {place.name} is acquired by {user} on {host}")


def _find(pattern: str) -> Any:
    """The coordinator's place for a RemotePlace pattern (a name, or `+` for LG_TOKEN), or None."""
    session = RemotePlaceManager.get().session
    try:
        return session.get_place(pattern) if session is not None else None
    except UserError:
        return None


def _place_name(pattern: str) -> str:
    place = _find(pattern)
    return place.name if place is not None else pattern


def _coordinator() -> str:
    return RemotePlaceManager.get().url or "127.0.0.1:20408"


def rig_tags(identity: Any) -> dict[str, str]:
    """What a place's tags say about the stimulator on it, from the device's IDENTITY: how a
    job asks for a rig (`labgrid-client reserve channels=4 icd=2`) and what the HIL suite
    checks the device against."""
    return {"channels": str(identity.channels), "firmware": f"{identity.fw_major}.{identity.fw_minor}",
            "icd": str(identity.protocol_version)}
