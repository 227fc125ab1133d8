"""The device: the ICD v1/v2 protocol state machine, driven by an injected clock.

`step(now, data)` takes the bytes that arrived at `now` (seconds on any monotonic clock) and
returns every byte the device sends up to `now`; `next_deadline()` says when to call it again
without input, so the watchdog, telemetry and delayed replies happen while the line is idle.
Frames are checked (and feed the watchdog) on arrival, like a UART interrupt would; they are
executed and answered `reply_latency_ms` later, in order, like a main loop would.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from . import protocol as wire
from .channel import Channel, Registers
from .framing import Deframer, Packet, encode_frame
from .options import OPEN, DeviceOptions
from .protocol import DEVICE_WIDE, LATCHING, Fault, Msg, Nak, SimOp

EventSink = Callable[[dict[str, Any]], None]
REPLAY_WINDOW = 8


@dataclass
class Counters:
    """STATUS counters; zeroed at power-on (and REBOOT) only, never by HELLO.

    rx_frames counts valid frames on arrival (a GET_STATUS counts itself); rx_out_of_order counts
    NAKs OUT_OF_ORDER; tx_frames counts every frame sent before the STATUS that reports it.
    """

    rx_frames: int = 0
    rx_bad_frames: int = 0
    rx_out_of_order: int = 0
    tx_frames: int = 0


class Device:
    """One stimulator. `on_event` receives output-off, fault and reboot events (for tracing)."""

    def __init__(self, options: DeviceOptions, now: float, on_event: EventSink | None = None) -> None:
        self.options = options
        self._on_event = on_event or (lambda event: None)
        self.loads = options.loads()  # the world outside the device: survives REBOOT
        self._out = bytearray()
        self._now = now
        self._power_on(now)

    def _power_on(self, now: float) -> None:
        self._boot = now
        self._deframer = Deframer()
        self._pending: deque[tuple[float, Packet]] = deque()
        self.channels = [Channel() for _ in range(self.options.channels)]
        self.latched = 0
        self.session: int | None = None  # the session's protocol version
        self._expected = 0
        self._replies: dict[int, Packet] = {}
        self._event_seq = self.options.event_counter_start
        self.counters = Counters()
        self._watchdog_armed = False
        self._last_rx = now
        self._telemetry_slot: list[int] = []  # per channel: index of its next period; empty = none
        self._reboot_requested = False

    # -- driving -------------------------------------------------------------------------------

    def step(self, now: float, data: bytes = b"") -> bytes:
        """Everything the device sends up to `now`, given `data` arrived at `now`."""
        self._now = max(self._now, now)
        self._run_timers()
        if data:
            self._receive(data)
            self._run_timers()
        out = bytes(self._out)
        self._out.clear()
        return out

    def next_deadline(self) -> float | None:
        """When the device next acts on its own (None: not before more input)."""
        timers = self._timers()
        return min(due for due, _, _ in timers) if timers else None

    def _timers(self) -> list[tuple[float, int, Callable[[float], None]]]:
        timers: list[tuple[float, int, Callable[[float], None]]] = []
        if self._pending:
            timers.append((self._pending[0][0], -2, self._execute_next))
        if self._watchdog_armed:
            timers.append((self._last_rx + self.options.watchdog_ms / 1000, -1, self._watchdog_expired))
        for ch, slot in enumerate(self._telemetry_slot):
            timers.append((self._slot_time(ch, slot), ch, partial(self._telemetry, ch)))
        return timers

    def _run_timers(self) -> None:
        while timers := self._timers():
            due, _, action = min(timers, key=lambda timer: timer[:2])
            if due > self._now:
                return
            action(due)

    def _receive(self, data: bytes) -> None:
        for packet in self._deframer.feed(data):
            if packet is None:
                self.counters.rx_bad_frames += 1
                continue
            self.counters.rx_frames += 1
            self._last_rx = self._now
            self._watchdog_armed = self.session is not None
            self._pending.append((self._now + self.options.reply_latency_ms / 1000, packet))

    def _execute_next(self, t: float) -> None:
        self._command(self._pending.popleft()[1], t)

    # -- time ----------------------------------------------------------------------------------

    def _us(self, t: float) -> int:
        return round((t - self._boot) * 1e6)

    def _ms(self, t: float) -> int:
        return int((t - self._boot) * 1000) & 0xFFFFFFFF

    def _slot_offset(self, ch: int) -> float:
        """Where in each telemetry period a channel's TELEMETRY goes, as a fraction of it."""
        return ch / self.options.channels if self.options.telemetry_schedule == "spread" else 0.0

    def _slot_time(self, ch: int, slot: int) -> float:
        return self._boot + (slot + self._slot_offset(ch)) / self.options.telemetry_hz

    def _next_slot(self, ch: int, after: float) -> int:
        """The first of `ch`'s slots (periods counted from power-on) strictly after `after`."""
        return math.floor((after - self._boot) * self.options.telemetry_hz - self._slot_offset(ch)) + 1

    # -- sending -------------------------------------------------------------------------------

    def _send(self, packet: Packet) -> None:
        self._out += encode_frame(packet)
        self.counters.tx_frames += 1

    def _send_event(self, type_: Msg, body: bytes) -> None:
        self._send(Packet(self._event_seq, type_, body))
        self._event_seq = (self._event_seq + 1) & 0xFF

    def _emit(self, event: str, t: float, **fields: Any) -> None:
        self._on_event({"event": event, "t": t, "device_time_ms": self._ms(t), **fields})

    def _ack(self, cmd: Packet) -> Packet:
        return Packet(cmd.seq, Msg.ACK)

    def _nak(self, cmd: Packet, code: Nak) -> Packet:
        echo = code == Nak.OUT_OF_ORDER or self.options.nak_expected == "expected"
        return Packet(cmd.seq, Msg.NAK, wire.NAK.pack(code, self._expected if echo else 0))

    # -- faults and safe state -----------------------------------------------------------------

    def _fault(self, code: Fault, channel: int, t: float) -> None:
        self._send_event(Msg.FAULT, wire.FAULT.pack(self._ms(t), code, channel))
        self._emit("fault", t, code=code.name, channel=channel)

    def _switch_off(self, index: int, t: float, cause: str, zero: bool = True) -> None:
        if self.channels[index].disable(self._us(t), zero):
            self._emit("output_off", t, channel=index, cause=cause)

    def _safe_state(self, t: float, cause: str) -> None:
        for index in range(len(self.channels)):
            self._switch_off(index, t, cause)

    def _latch(self, code: Fault, t: float) -> None:
        self.latched |= 1 << code
        self._safe_state(t, code.name)
        self._fault(code, DEVICE_WIDE, t)

    def _trip(self, index: int, code: Fault, t: float) -> None:
        """A per-channel, unlatched fault: zero and disable that channel only."""
        self._switch_off(index, t, code.name)
        self._fault(code, index, t)

    def _supervise(self, t: float) -> None:
        """Load supervision of every enabled channel (ICD §3)."""
        for index, ch in enumerate(self.channels):
            load, amplitude = self.loads[index], ch.regs.amplitude_ua
            if not ch.enabled:
                continue
            if load == OPEN and (amplitude > 0 or self.options.open_circuit == "enabled"):
                self._trip(index, Fault.OPEN_CIRCUIT, t)
            elif load != OPEN and amplitude * load > self.options.compliance_mv * 1000:
                self._trip(index, Fault.COMPLIANCE, t)

    def _watchdog_expired(self, t: float) -> None:
        self._watchdog_armed = False
        self._latch(Fault.WATCHDOG, t)

    # -- unsolicited telemetry -----------------------------------------------------------------

    def _telemetry(self, index: int, due: float) -> None:
        ch = self.channels[index]
        ch.settle(self._us(due))
        r = ch.regs
        body = wire.TELEMETRY_V1.pack(
            self._ms(due), index, int(ch.enabled), self.latched, r.amplitude_ua, r.frequency_mhz,
            r.phase_us, self.loads[index], ch.charge_pc // 10**6,
        )  # fmt: skip
        if (self.session or 0) >= 2:
            tail = (r.shape, r.asym_ratio, r.burst_pulses, 0, r.interphase_us, r.burst_rate_mhz)
            body += wire.TELEMETRY_V2_TAIL.pack(*tail)
        self._send_event(Msg.TELEMETRY, body)
        slot = self._telemetry_slot[index]
        self._telemetry_slot[index] = max(slot + 1, self._next_slot(index, self._now))  # overruns skip

    # -- commands ------------------------------------------------------------------------------

    def _command(self, cmd: Packet, t: float) -> None:
        if cmd.type == Msg.ESTOP:  # whatever its seq and body, without touching `expected`
            self._latch(Fault.ESTOP, t)
            self._send(self._ack(cmd))
        elif cmd.type == Msg.HELLO:  # whatever its seq
            self._send(self._hello(cmd, t))
        elif self.session is None:
            self._send(self._execute(cmd, t) if cmd.type == Msg.SIM_CONTROL else self._nak(cmd, Nak.NO_SESSION))
        else:
            self._send(self._sequenced(cmd, t))
        if self._reboot_requested:
            self._safe_state(t, "REBOOT")
            self._emit("reboot", t)
            self._power_on(t)

    def _sequenced(self, cmd: Packet, t: float) -> Packet:
        behind = (self._expected - cmd.seq) & 0xFF
        if behind == 0:
            self._expected = (cmd.seq + 1) & 0xFF
            reply = self._execute(cmd, t)
            self._replies[cmd.seq] = reply
            self._replies.pop((cmd.seq - REPLAY_WINDOW) & 0xFF, None)
            return reply
        if behind <= REPLAY_WINDOW and cmd.seq in self._replies:
            return self._replies[cmd.seq]  # a retransmission: not executed again
        self.counters.rx_out_of_order += 1
        return self._nak(cmd, Nak.OUT_OF_ORDER)

    def _execute(self, cmd: Packet, t: float) -> Packet:
        handlers: dict[int, Callable[[Packet, float], Packet]] = {
            Msg.HEARTBEAT: lambda c, _: self._ack(c),
            Msg.GET_STATUS: self._status,
            Msg.SET_CHANNEL: self._set_channel,
            Msg.OUTPUT: self._output,
            Msg.CLEAR_FAULT: self._clear_fault,
            Msg.SIM_CONTROL: self._sim_control,
        }
        if (self.session or 0) >= 2:
            handlers[Msg.BYE] = self._bye
        handler = handlers.get(cmd.type)
        if handler is None:
            return self._nak(cmd, Nak.UNKNOWN_TYPE)
        if cmd.type == Msg.SIM_CONTROL and self.options.sim_control == "unsupported":
            return self._nak(cmd, Nak.UNSUPPORTED)
        if len(cmd.body) != wire.BODY_LENGTH[cmd.type]:
            return self._nak(cmd, Nak.BAD_LENGTH)
        return handler(cmd, t)

    def _hello(self, cmd: Packet, t: float) -> Packet:
        if len(cmd.body) != wire.BODY_LENGTH[Msg.HELLO]:
            return self._nak(cmd, Nak.BAD_LENGTH)
        if cmd.body[0] == 0:
            return self._nak(cmd, Nak.OUT_OF_RANGE)
        self._safe_state(t, "HELLO")
        reset = self.options.protocol_version >= 2 or self.options.v1_hello == "reset"
        for ch in self.channels:
            ch.charge_pc = 0
            if reset:
                ch.regs = Registers()
        self.session = min(cmd.body[0], self.options.protocol_version)
        self._expected = (cmd.seq + 1) & 0xFF
        self._watchdog_armed = True
        if not self._telemetry_slot:
            self._telemetry_slot = [self._next_slot(ch, t) for ch in range(len(self.channels))]
        o = self.options
        reply = Packet(cmd.seq, Msg.IDENTITY, wire.IDENTITY.pack(
            self.session, o.fw_major, o.fw_minor, o.channels, o.serial.encode("ascii"), o.max_amplitude_ua,
            o.max_phase_us, o.min_frequency_mhz, o.max_frequency_mhz, o.max_phase_charge_nc, o.max_step_ua,
            o.max_slew_ua_per_s, o.compliance_mv, o.watchdog_ms, o.telemetry_hz, self.latched,
        ))  # fmt: skip
        self._replies = {cmd.seq: reply}
        return reply

    def _bye(self, cmd: Packet, t: float) -> Packet:
        self._safe_state(t, "BYE")
        self.session = None
        self._watchdog_armed = False
        self._telemetry_slot = []
        return self._ack(cmd)

    def _status(self, cmd: Packet, t: float) -> Packet:
        mask = sum(1 << i for i, ch in enumerate(self.channels) if ch.enabled)
        c = self.counters
        body = wire.STATUS.pack(
            self._ms(t), self.latched, mask, c.rx_frames, c.rx_bad_frames, c.rx_out_of_order, c.tx_frames
        )
        return Packet(cmd.seq, Msg.STATUS, body)

    def _set_channel(self, cmd: Packet, t: float) -> Packet:
        index, regs = Registers.from_body(cmd.body)
        if index >= len(self.channels) or regs.out_of_range(self.options):
            return self._nak(cmd, Nak.OUT_OF_RANGE)
        ch, now_us = self.channels[index], self._us(t)
        rise = regs.amplitude_ua - ch.regs.amplitude_ua
        if ch.enabled and rise > 0:
            if rise > self.options.max_step_ua:
                return self._nak(cmd, Nak.STEP_TOO_LARGE)
            if rise * 10**6 > self.options.max_slew_ua_per_s * (now_us - ch.ramp_from_us):
                return self._nak(cmd, Nak.SLEW_TOO_FAST)
            ch.ramp_from_us = now_us
        ch.apply(regs, now_us)
        self._supervise(t)
        return self._ack(cmd)

    def _output(self, cmd: Packet, t: float) -> Packet:
        mask = cmd.body[0]
        if mask >> len(self.channels):
            return self._nak(cmd, Nak.OUT_OF_RANGE)
        turning_on = [ch for i, ch in enumerate(self.channels) if mask >> i & 1 and not ch.enabled]
        if turning_on and self.latched:
            return self._nak(cmd, Nak.FAULT_LATCHED)
        if any(ch.regs.amplitude_ua for ch in turning_on):
            return self._nak(cmd, Nak.NOT_ZERO_START)
        for ch in turning_on:
            ch.enable(self._us(t))
        for index, ch in enumerate(self.channels):
            if ch.enabled and not mask >> index & 1:
                self._switch_off(index, t, "OUTPUT", zero=self.options.output_off_amplitude == "zero")
        self._supervise(t)
        return self._ack(cmd)

    def _clear_fault(self, cmd: Packet, t: float) -> Packet:
        if any(ch.enabled for ch in self.channels):
            return self._nak(cmd, Nak.BAD_STATE)
        self.latched = 0
        return self._ack(cmd)

    def _sim_control(self, cmd: Packet, t: float) -> Packet:
        op, index, value = wire.SIM_CONTROL.unpack(cmd.body)
        if op == SimOp.SET_LOAD:
            if index >= len(self.channels):
                return self._nak(cmd, Nak.OUT_OF_RANGE)
            self.loads[index] = value
            self._supervise(t)
        elif op == SimOp.INJECT_FAULT:
            if value >= len(Fault) or (Fault(value) not in LATCHING and index >= len(self.channels)):
                return self._nak(cmd, Nak.OUT_OF_RANGE)
            if Fault(value) in LATCHING:
                self._latch(Fault(value), t)
            else:
                self._trip(index, Fault(value), t)
        elif op == SimOp.REBOOT:
            self._reboot_requested = True
        else:
            return self._nak(cmd, Nak.UNSUPPORTED)
        return self._ack(cmd)
