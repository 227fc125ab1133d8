"""Message types, codes and body layouts of ICD §4-§6, as struct formats (all little-endian)."""

from __future__ import annotations

import struct
from enum import IntEnum


class Msg(IntEnum):
    """Packet `type` values, host -> device (0x01..0xF0) and device -> host (0x80..0x91)."""

    HELLO = 0x01
    HEARTBEAT = 0x02
    GET_STATUS = 0x03
    BYE = 0x04
    SET_CHANNEL = 0x10
    OUTPUT = 0x11
    CLEAR_FAULT = 0x12
    ESTOP = 0x1F
    SIM_CONTROL = 0xF0
    ACK = 0x80
    IDENTITY = 0x81
    STATUS = 0x83
    NAK = 0x8F
    TELEMETRY = 0x90
    FAULT = 0x91


class Nak(IntEnum):
    UNKNOWN_TYPE = 1
    BAD_LENGTH = 2
    OUT_OF_RANGE = 3
    NOT_ZERO_START = 4
    STEP_TOO_LARGE = 5
    SLEW_TOO_FAST = 6
    FAULT_LATCHED = 7
    OUT_OF_ORDER = 8
    UNSUPPORTED = 9
    BAD_STATE = 10
    NO_SESSION = 11


class Fault(IntEnum):
    """Fault codes; bit `code` of `latched_faults`."""

    WATCHDOG = 0
    ESTOP = 1
    OPEN_CIRCUIT = 2
    OVERCURRENT = 3
    COMPLIANCE = 4
    HARDWARE = 5


LATCHING = frozenset({Fault.WATCHDOG, Fault.ESTOP, Fault.OVERCURRENT, Fault.HARDWARE})
DEVICE_WIDE = 0xFF  # FAULT `channel` of a device-wide fault
OPEN_LOAD = 0xFFFFFFFF  # load_ohm of an open circuit


class SimOp(IntEnum):
    SET_LOAD = 1
    INJECT_FAULT = 2
    REBOOT = 3


# Expected body lengths of host commands that have a fixed one (ESTOP is executed whatever its body).
BODY_LENGTH: dict[int, int] = {
    Msg.HELLO: 1,
    Msg.HEARTBEAT: 0,
    Msg.GET_STATUS: 0,
    Msg.BYE: 0,
    Msg.SET_CHANNEL: 20,
    Msg.OUTPUT: 1,
    Msg.CLEAR_FAULT: 0,
    Msg.SIM_CONTROL: 6,
}

SET_CHANNEL = struct.Struct("<BBBBIIHHI")
SIM_CONTROL = struct.Struct("<BBI")
NAK = struct.Struct("<BB")
IDENTITY = struct.Struct("<BBBB12sIHIIIIIIHBH")
STATUS = struct.Struct("<IHBIIII")
TELEMETRY_V1 = struct.Struct("<IBBHIIHII")
TELEMETRY_V2_TAIL = struct.Struct("<BBBBHI")
FAULT = struct.Struct("<IBB")
