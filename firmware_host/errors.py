"""One exception tree for the host side, translated at each boundary.

Safety refusals live in `safety.errors` (the interlock is certified on its own); everything
here is about reaching and talking to a device.
"""

from __future__ import annotations

from .icd import NakCode


class EstimError(Exception):
    """Base of every error the host driver raises."""


class TransportError(EstimError):
    """The byte path failed: open, read or write."""


class DeviceNotFound(TransportError):
    """No device at that URL or path."""


class DeviceBusy(TransportError):
    """Another program holds the device (it is opened exclusively)."""


class PlaceNotAcquired(TransportError):
    """A labgrid place that this user on this computer has not acquired: nothing is opened."""


class TransportClosed(TransportError):
    """The byte path was closed or vanished (unplugged, peer gone)."""


class LinkError(EstimError):
    """The ICD link could not deliver a command or lost the device."""


class LinkTimeout(LinkError, TimeoutError):
    """No reply after every bounded retransmission."""


class HandshakeFailed(LinkError):
    """HELLO did not produce a usable IDENTITY."""


class ProtocolMismatch(HandshakeFailed):
    """The device speaks a protocol version this host does not know."""


class DeviceRebooted(LinkError):
    """The device lost its session (reboot or power loss) in the middle of ours."""


class DeviceRefused(EstimError):
    """The device answered NAK: it refused a command and executed nothing."""

    code: NakCode = NakCode.UNKNOWN_TYPE

    def __init__(self, command: str, code: int, expected: int, why: str = "") -> None:
        self.command = command
        self.nak_code = code
        self.expected = expected
        try:
            name = NakCode(code).name
        except ValueError:
            name = f"code {code}"
        reason = why or _WHY.get(code, "the device gave no known reason")
        super().__init__(f"device refused {command}: {name} ({reason})")


_WHY = {
    NakCode.UNKNOWN_TYPE: "it does not know this command type",
    NakCode.BAD_LENGTH: "the command body has the wrong length",
    NakCode.OUT_OF_RANGE: "a field is outside the limits it reported in IDENTITY",
    NakCode.NOT_ZERO_START: "a channel may only be enabled at amplitude 0",
    NakCode.STEP_TOO_LARGE: "the amplitude increase is larger than its max_step",
    NakCode.SLEW_TOO_FAST: "the amplitude rises faster than its max_slew",
    NakCode.FAULT_LATCHED: "a device-wide fault is latched; clear it first",
    NakCode.OUT_OF_ORDER: "the sequence number was not the one it expected",
    NakCode.UNSUPPORTED: "this device does not support the command",
    NakCode.BAD_STATE: "the command is not allowed in the device's present state",
    NakCode.NO_SESSION: "there is no session (the device rebooted or never got HELLO)",
}


def _refusal_class(code: NakCode) -> type[DeviceRefused]:
    name = "".join(part.capitalize() for part in code.name.split("_"))
    return type(name, (DeviceRefused,), {"code": code, "__doc__": f"NAK {code.name}: {_WHY[code]}."})


NAK_ERRORS: dict[int, type[DeviceRefused]] = {code: _refusal_class(code) for code in NakCode}
OutOfRange = NAK_ERRORS[NakCode.OUT_OF_RANGE]
NotZeroStart = NAK_ERRORS[NakCode.NOT_ZERO_START]
StepTooLarge = NAK_ERRORS[NakCode.STEP_TOO_LARGE]
SlewTooFast = NAK_ERRORS[NakCode.SLEW_TOO_FAST]
FaultLatched = NAK_ERRORS[NakCode.FAULT_LATCHED]
Unsupported = NAK_ERRORS[NakCode.UNSUPPORTED]
BadState = NAK_ERRORS[NakCode.BAD_STATE]
NoSession = NAK_ERRORS[NakCode.NO_SESSION]
UnknownType = NAK_ERRORS[NakCode.UNKNOWN_TYPE]
BadLength = NAK_ERRORS[NakCode.BAD_LENGTH]
OutOfOrder = NAK_ERRORS[NakCode.OUT_OF_ORDER]


def refusal_for(command: str, code: int, expected: int) -> DeviceRefused:
    """The typed exception for a NAK code (unknown codes give the base class)."""
    return NAK_ERRORS.get(code, DeviceRefused)(command, code, expected)
