"""The simulated stimulator: the firmware behind ICD.md as a pure state machine.

Time is injected (`now`, seconds on any monotonic scale), so tests drive it
deterministically and the server drives it from `time.monotonic()`. Bytes in, bytes out;
no I/O and no threads here, only one lock so a server thread and an inspecting test or
benchmark can share the object.

Choices where ICD.md is silent (each is also noted where it is implemented):

- A CRC-valid frame with an unknown type (or a device-to-host type) or a wrong body
  length is NAKed UNKNOWN_TYPE / BAD_LENGTH. Inside a session it goes through sequencing
  like any command: with `seq == expected` it is answered, its NAK is stored for
  retransmission and `expected` advances, so a host's go-back-N window stays aligned.
  Outside a session it is NAKed with `expected` 0 (UNKNOWN_TYPE before NO_SESSION).
- NAK.expected is, for codes other than OUT_OF_ORDER, the value of `expected` after the
  command (seq + 1), and 0 outside a session.
- A seq among the 8 before `expected` for which nothing was stored in this session (just
  after HELLO) is NAKed OUT_OF_ORDER: there is no reply to re-send.
- `rx_out_of_order` counts every sequenced frame with `seq != expected`: retransmissions
  and OUT_OF_ORDER NAKs alike.
- A CRC-valid ESTOP frame is honoured even with a malformed body (fail safe) and sends
  FAULT ESTOP every time, also when ESTOP is already latched.
- HELLO with another protocol_version still starts the session; the session runs at the
  lower of the host's and the device's version, and IDENTITY carries it (0 for a host that
  says 0: the host decides). The device's own version decides what HELLO resets: a v2
  device returns every register to zero, a v1 device keeps them (only amplitude and
  enable go to the safe state). The session version decides the message set: BYE and
  36-byte TELEMETRY in a v2 session, NAK UNKNOWN_TYPE for BYE and 26-byte TELEMETRY in v1.
- BYE (v2): ACK, safe state, watchdog stopped, no session; nothing latched. Its reply is
  not stored (there is no session to retransmit in), so a resent BYE meets NO_SESSION.
- The watchdog fires once per silence: after tripping it re-arms on the next valid frame.
  The session survives a trip (telemetry continues; the host normally sends HELLO).
- on_event "output_off" reasons: estop, watchdog, fault (other faults), hello, reboot,
  and command (OUTPUT cleared enable bits); detail `mask` = the channels turned off.
- Disabling a channel with OUTPUT leaves its amplitude register unchanged, so enabling it
  again needs an amplitude of 0 first (zero start). TELEMETRY reports the register.
- Before any SET_CHANNEL (and, in v2, after every HELLO) every register is 0 (shape 0 is
  BIPHASIC; asym 0, 0 mHz, 0 µs, 0 µA, ICD §3): the channel delivers nothing even when enabled.
- Pulse duration is phase + interphase + phase × asym_ratio for the biphasic shapes and
  phase alone for MONOPHASIC. A burst fits when (burst_pulses − 1) periods plus one pulse
  fit in 1 / burst_rate; burst_rate_mhz is checked only when burst_pulses ≥ 2.
- OPEN_CIRCUIT / COMPLIANCE are never set in `latched_faults` (not latched, ICD §3).
  TELEMETRY flag bit1 (compliance-limited) is set in the first TELEMETRY of a channel
  after it tripped COMPLIANCE (supervision or injected), then clear again.
- SET_CHANNEL that pushes an enabled channel over compliance is ACKed, then supervision
  trips it (ACK then FAULT), as for a load change.
- SIM_CONTROL: unknown op → NAK UNSUPPORTED; channel ≥ channels or unknown fault code →
  OUT_OF_RANGE. INJECT_FAULT OPEN_CIRCUIT/COMPLIANCE trips the channel even if disabled.
  Loads are the simulated world, not device state: REBOOT keeps them.
- The slew check measures time in whole microseconds (rounded), as a firmware timer
  would, so a host that waits exactly increase / max_slew_ua_per_s is not refused by
  floating-point noise.
- Charge is integrated exactly (rationals) as the device's clock advances; tick/receive
  calls are the only instants at which supervision acts.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

from firmware_host.icd import (
    DEVICE_WIDE,
    Bye,
    DEVICE_WIDE_FAULTS,
    HOST_COMMANDS,
    OPEN_CIRCUIT_OHM,
    RETRANSMIT_WINDOW,
    Ack,
    BodyError,
    ClearFault,
    Fault,
    FaultCode,
    FrameDecoder,
    GetStatus,
    Heartbeat,
    Hello,
    Message,
    MsgType,
    Nak,
    NakCode,
    Output,
    RawPacket,
    SetChannel,
    Shape,
    SimControl,
    SimOp,
    Status,
    Telemetry,
    encode_frame,
)

from .config import SimConfig

EventHook = Callable[[str, float, dict], None]

MAX_TICK_INTERVAL_S = 0.005  # supervision runs at least this often
_U32 = 0xFFFFFFFF
_REASON = {FaultCode.WATCHDOG: "watchdog", FaultCode.ESTOP: "estop"}


@dataclass(slots=True)
class _Channel:
    """One output stage: the last accepted SET_CHANNEL plus what the hardware tracks."""

    load_ohm: int
    shape: int = Shape.BIPHASIC
    asym_ratio: int = 0      # power-on: every register 0 (ICD §3); 0 reads as "not set"
    burst_pulses: int = 0
    frequency_mhz: int = 0
    burst_rate_mhz: int = 0
    phase_us: int = 0
    interphase_us: int = 0
    amplitude_ua: int = 0
    enabled: bool = False
    ramp_from: float = 0.0  # when enabled or last accepted increase: the slew reference
    charge_nc: Fraction = Fraction(0)
    compliance_flag: bool = False

    def pulse_rate_mhz(self) -> int:
        return self.burst_pulses * self.burst_rate_mhz if self.burst_pulses >= 2 else self.frequency_mhz


class _Refused(Exception):
    """A command refused with this NAK code before it changed anything."""

    def __init__(self, code: NakCode) -> None:
        super().__init__(code.name)
        self.code = code


class SimulatedDevice:
    """ICD v2 firmware model (v1 when configured so); see the module docstring for where ICD.md left a choice."""

    def __init__(self, config: SimConfig | None = None, *, now: float, on_event: EventHook | None = None) -> None:
        self.config = config or SimConfig()
        self.on_event = on_event  # (kind, now, detail); called outside the lock
        self._lock = threading.Lock()
        self._decoder = FrameDecoder()
        self._loads = [self.config.load_ohm] * self.config.channels
        self._events: list[tuple[str, float, dict]] = []
        self._clock = now
        self._power_on(now)

    # --- inspection -----------------------------------------------------------------

    @property
    def output_mask(self) -> int:
        with self._lock:
            return self._mask()

    @property
    def amplitudes_ua(self) -> tuple[int, ...]:
        with self._lock:
            return tuple(ch.amplitude_ua for ch in self._channels)

    @property
    def latched_faults(self) -> int:
        with self._lock:
            return self._latched

    @property
    def in_session(self) -> bool:
        with self._lock:
            return self._in_session

    @property
    def counters(self) -> dict[str, int]:
        """The STATUS counters (reset at boot)."""
        with self._lock:
            return self._counters()

    # --- the device's clock and byte stream --------------------------------------------

    def receive(self, data: bytes, now: float) -> bytes:
        """Advance to `now`, then execute every complete frame in `data`; returns bytes to send."""
        with self._lock:
            bad_before = self._decoder.bad_frames
            packets = self._decoder.feed(data)
            self._rx_bad += self._decoder.bad_frames - bad_before
            if packets and self._in_session:
                # frames in hand arrived by `now`, when a UART interrupt would already have fed the
                # watchdog: a simulator thread late to read them must not trip on its own lateness
                self._last_rx = now
            out = bytearray(self._advance(now))
            for packet in packets:
                out += self._handle(packet, self._clock)
            events, self._events = self._events, []
        self._fire(events)
        return bytes(out)

    def tick(self, now: float) -> bytes:
        """Advance the device's own clock: charge, watchdog, load supervision, telemetry."""
        with self._lock:
            out = self._advance(now)
            events, self._events = self._events, []
        self._fire(events)
        return out

    def next_deadline(self, now: float) -> float:
        """When `tick` must next run; never more than MAX_TICK_INTERVAL_S away."""
        with self._lock:
            deadline = now + MAX_TICK_INTERVAL_S
            if self._watchdog_armed:
                deadline = min(deadline, self._last_rx + self.config.watchdog_ms / 1000)
            if self._in_session:
                deadline = min(deadline, self._next_telemetry)
            return max(deadline, now)

    # --- boot and time ---------------------------------------------------------------

    def _power_on(self, now: float) -> None:
        self._boot = now
        self._channels = [_Channel(load_ohm=load) for load in self._loads]
        self._latched = 0
        self._in_session = False
        self._session_version = 0
        self._expected = 0
        self._replies: dict[int, bytes] = {}
        self._event_seq = 0
        self._watchdog_armed = False
        self._last_rx = now
        self._session_start = self._next_telemetry = now
        self._rx_frames = self._rx_bad = self._rx_out_of_order = self._tx_frames = 0

    def _advance(self, now: float) -> bytes:
        now = max(now, self._clock)  # never run the device clock backwards
        self._integrate_charge(now)
        self._clock = now
        out = bytearray()
        if self._watchdog_armed and now >= self._last_rx + self.config.watchdog_ms / 1000:
            self._watchdog_armed = False
            out += self._device_fault(FaultCode.WATCHDOG, now)
        out += self._supervise_loads(now)
        if self._in_session and now >= self._next_telemetry:
            out += self._telemetry(now)
            # The next slot of the grid set at HELLO after now: a late tick sends no backlog.
            hz = self.config.telemetry_hz
            index = math.floor((now - self._session_start) * hz) + 1
            while self._session_start + index / hz <= now:
                index += 1
            self._next_telemetry = self._session_start + index / hz
        return bytes(out)

    def _integrate_charge(self, now: float) -> None:
        dt = Fraction(now) - Fraction(self._clock)
        if dt <= 0:
            return
        for ch in self._channels:
            if ch.enabled and ch.amplitude_ua:
                # nC/s = µA × µs / 1000 (nC per pulse) × mHz / 1000 (pulses per second)
                ch.charge_nc += Fraction(ch.amplitude_ua * ch.phase_us * ch.pulse_rate_mhz(), 1_000_000) * dt

    def _device_time_ms(self, now: float) -> int:
        return int((now - self._boot) * 1000) & _U32

    # --- framing out -----------------------------------------------------------------

    def _frame(self, seq: int, message: Message) -> bytes:
        self._tx_frames += 1
        return encode_frame(seq, message)

    def _event_frame(self, message: Message) -> bytes:
        seq = self._event_seq
        self._event_seq = (seq + 1) & 0xFF
        return self._frame(seq, message)

    def _emit(self, kind: str, now: float, **detail: object) -> None:
        self._events.append((kind, now, detail))

    def _fire(self, events: list[tuple[str, float, dict]]) -> None:
        hook = self.on_event
        if hook is not None:
            for kind, now, detail in events:
                hook(kind, now, detail)

    # --- sequencing ------------------------------------------------------------------

    def _handle(self, packet: RawPacket, now: float) -> bytes:
        self._rx_frames += 1
        if self._in_session:
            self._last_rx = now
            self._watchdog_armed = True
        if packet.type == MsgType.ESTOP:  # fail safe: whatever its seq or body
            return self._estop(packet.seq, now)
        hello = self._as_hello(packet)
        if hello is not None:
            return self._hello(packet.seq, hello, now)
        if not self._in_session:
            return self._outside_session(packet, now)
        seq, expected = packet.seq, self._expected
        if seq != expected:
            self._rx_out_of_order += 1
            behind = (expected - seq) & 0xFF
            if 1 <= behind <= RETRANSMIT_WINDOW and seq in self._replies:
                reply = self._replies[seq]
                self._tx_frames += 1
                return reply
            return self._frame(seq, Nak(NakCode.OUT_OF_ORDER, expected))
        self._expected = (seq + 1) & 0xFF
        self._replies.pop((seq - RETRANSMIT_WINDOW) & 0xFF, None)
        reply, after = self._execute(packet, now)
        if self._in_session:  # a REBOOT has just forgotten every stored reply
            self._replies[seq] = reply
        return reply + after

    def _as_hello(self, packet: RawPacket) -> Hello | None:
        if packet.type != MsgType.HELLO:
            return None
        try:
            return Hello.from_body(packet.body)
        except BodyError:
            return None  # malformed HELLO: sequenced and NAKed BAD_LENGTH like any frame

    def _outside_session(self, packet: RawPacket, now: float) -> bytes:
        """Before the first HELLO or after REBOOT: only SIM_CONTROL runs (ESTOP/HELLO did)."""
        if packet.type not in HOST_COMMANDS:
            return self._frame(packet.seq, Nak(NakCode.UNKNOWN_TYPE, 0))
        if packet.type != MsgType.SIM_CONTROL:
            if packet.type == MsgType.HELLO:
                return self._frame(packet.seq, Nak(NakCode.BAD_LENGTH, 0))
            return self._frame(packet.seq, Nak(NakCode.NO_SESSION, 0))
        reply, after = self._execute(packet, now)
        return reply + after

    def _execute(self, packet: RawPacket, now: float) -> tuple[bytes, bytes]:
        """Run one command; returns (its reply, unsolicited frames that must follow it)."""
        nak_expected = self._expected if self._in_session else 0
        try:
            if packet.type not in HOST_COMMANDS:
                raise BodyError(NakCode.UNKNOWN_TYPE, f"type 0x{packet.type:02X} is not a command")
            message = packet.message()
            if isinstance(message, SimControl) and message.op == SimOp.REBOOT:
                ack = self._frame(packet.seq, Ack())  # ACK first: the reboot loses the link state
                self._reboot(now)
                return ack, b""
            after = self._dispatch(message, now)
        except (BodyError, _Refused) as exc:
            return self._frame(packet.seq, Nak(exc.code, nak_expected)), b""
        return self._frame(packet.seq, self._reply_for(message)), after

    def _reply_for(self, message: Message) -> Message:
        if isinstance(message, GetStatus):
            counters = (self._rx_frames, self._rx_bad, self._rx_out_of_order, self._tx_frames)
            return Status(
                self._device_time_ms(self._clock), self._latched, self._mask(), *(c & _U32 for c in counters)
            )
        return Ack()

    # --- commands --------------------------------------------------------------------

    def _dispatch(self, message: Message, now: float) -> bytes:
        """Apply a command (raising _Refused to NAK before any change); returns frames to follow."""
        if isinstance(message, (Heartbeat, GetStatus)):
            return b""
        if isinstance(message, Bye):
            if self._session_version < 2:
                raise _Refused(NakCode.UNKNOWN_TYPE)
            self._safe_state(now, "bye")
            self._in_session = False
            self._watchdog_armed = False
            return b""
        if isinstance(message, SetChannel):
            self._set_channel(message, now)
            return self._supervise_loads(now)
        if isinstance(message, Output):
            self._output(message.enable_mask, now)
            return b""
        if isinstance(message, ClearFault):
            if self._mask():
                raise _Refused(NakCode.BAD_STATE)
            self._latched = 0
            return b""
        assert isinstance(message, SimControl), message  # HELLO and ESTOP are handled earlier
        return self._sim_control(message, now)

    def _hello(self, seq: int, hello: Hello, now: float) -> bytes:
        self._safe_state(now, "hello")
        if self.config.protocol_version >= 2:  # v2: no setting survives into the next session
            for ch in self._channels:
                ch.shape, ch.asym_ratio, ch.burst_pulses = Shape.BIPHASIC, 0, 0  # power-on values: all zero
                ch.frequency_mhz = ch.burst_rate_mhz = ch.phase_us = ch.interphase_us = 0
        self._session_version = min(hello.protocol_version, self.config.protocol_version)
        self._in_session = True
        self._expected = (seq + 1) & 0xFF
        self._replies = {}
        self._last_rx = now
        self._watchdog_armed = True
        self._session_start = now
        self._next_telemetry = now + 1 / self.config.telemetry_hz
        for ch in self._channels:
            ch.charge_nc = Fraction(0)
            ch.compliance_flag = False  # a trip before this session is not news to its host
        reply = self._frame(seq, self.config.identity(self._latched, self._session_version))
        self._replies[seq] = reply
        return reply

    def _estop(self, seq: int, now: float) -> bytes:
        ack = self._frame(seq, Ack())
        return ack + self._device_fault(FaultCode.ESTOP, now)

    def _set_channel(self, msg: SetChannel, now: float) -> None:
        self._check_settings(msg)
        ch = self._channels[msg.channel]
        increase = msg.amplitude_ua - ch.amplitude_ua
        if ch.enabled and increase > 0:
            if increase > self.config.max_step_ua:
                raise _Refused(NakCode.STEP_TOO_LARGE)
            elapsed_us = round((now - ch.ramp_from) * 1_000_000)  # a firmware timer: whole µs
            if increase * 1_000_000 > self.config.max_slew_ua_per_s * elapsed_us:
                raise _Refused(NakCode.SLEW_TOO_FAST)
            ch.ramp_from = now
        ch.shape, ch.asym_ratio, ch.burst_pulses = msg.shape, msg.asym_ratio, msg.burst_pulses
        ch.frequency_mhz, ch.burst_rate_mhz = msg.frequency_mhz, msg.burst_rate_mhz
        ch.phase_us, ch.interphase_us, ch.amplitude_ua = msg.phase_us, msg.interphase_us, msg.amplitude_ua

    def _check_settings(self, msg: SetChannel) -> None:
        cfg = self.config
        if (
            msg.channel >= cfg.channels
            or msg.shape not in _SHAPES
            or msg.asym_ratio == 0
            or not cfg.min_frequency_mhz <= msg.frequency_mhz <= cfg.max_frequency_mhz
            or not 1 <= msg.phase_us <= cfg.max_phase_us
            or msg.interphase_us > cfg.max_phase_us
            or msg.amplitude_ua > cfg.max_amplitude_ua
            or msg.amplitude_ua * msg.phase_us > cfg.max_phase_charge_nc * 1000
        ):
            raise _Refused(NakCode.OUT_OF_RANGE)
        if msg.shape == Shape.MONOPHASIC:
            pulse_us = msg.phase_us
        else:
            pulse_us = msg.phase_us + msg.interphase_us + msg.phase_us * msg.asym_ratio
        # Periods in µs are 1e9 / mHz; compare cross-multiplied to stay in integers.
        if pulse_us * msg.frequency_mhz > 1_000_000_000:
            raise _Refused(NakCode.OUT_OF_RANGE)
        if msg.burst_pulses >= 2:
            rate, burst_rate = msg.frequency_mhz, msg.burst_rate_mhz
            if not 1 <= burst_rate <= rate:
                raise _Refused(NakCode.OUT_OF_RANGE)
            burst_extent = (msg.burst_pulses - 1) * 1_000_000_000 * burst_rate + pulse_us * rate * burst_rate
            if burst_extent > 1_000_000_000 * rate:
                raise _Refused(NakCode.OUT_OF_RANGE)

    def _output(self, enable_mask: int, now: float) -> None:
        if enable_mask >> self.config.channels:
            raise _Refused(NakCode.OUT_OF_RANGE)
        newly = enable_mask & ~self._mask()
        if enable_mask and self._latched & _DEVICE_WIDE_MASK:
            raise _Refused(NakCode.FAULT_LATCHED)
        if any(self._channels[i].amplitude_ua for i in _bits(newly)):
            raise _Refused(NakCode.NOT_ZERO_START)
        before = self._mask()
        for i, ch in enumerate(self._channels):
            if newly >> i & 1:
                ch.ramp_from = now
            ch.enabled = bool(enable_mask >> i & 1)
        turned_off = before & ~enable_mask
        if turned_off:
            self._emit("output_off", now, reason="command", mask=turned_off)

    def _sim_control(self, msg: SimControl, now: float) -> bytes:
        if msg.op == SimOp.SET_LOAD:
            if msg.channel >= self.config.channels:
                raise _Refused(NakCode.OUT_OF_RANGE)
            self._loads[msg.channel] = self._channels[msg.channel].load_ohm = msg.value
            return self._supervise_loads(now)
        if msg.op == SimOp.INJECT_FAULT:
            if msg.value not in _FAULT_CODES:
                raise _Refused(NakCode.OUT_OF_RANGE)
            code = FaultCode(msg.value)
            if code in DEVICE_WIDE_FAULTS:
                return self._device_fault(code, now)
            if msg.channel >= self.config.channels:
                raise _Refused(NakCode.OUT_OF_RANGE)
            return self._channel_fault(msg.channel, code, now)
        raise _Refused(NakCode.UNSUPPORTED)

    def _reboot(self, now: float) -> None:
        """SIM_CONTROL REBOOT: restart as from power-on (loads, the simulated world, stay)."""
        self._safe_state(now, "reboot")
        self._emit("reboot", now)
        self._power_on(now)

    # --- safety ----------------------------------------------------------------------

    def _mask(self) -> int:
        return sum(1 << i for i, ch in enumerate(self._channels) if ch.enabled)

    def _safe_state(self, now: float, reason: str) -> None:
        before = self._mask()
        for ch in self._channels:
            ch.enabled = False
            ch.amplitude_ua = 0
        if before:
            self._emit("output_off", now, reason=reason, mask=before)

    def _device_fault(self, code: FaultCode, now: float) -> bytes:
        self._latched |= 1 << code
        self._safe_state(now, _REASON.get(code, "fault"))
        self._emit("fault", now, code=code.name, channel=DEVICE_WIDE)
        return self._event_frame(Fault(self._device_time_ms(now), code, DEVICE_WIDE))

    def _channel_fault(self, index: int, code: FaultCode, now: float) -> bytes:
        ch = self._channels[index]
        if ch.enabled:
            self._emit("output_off", now, reason="fault", mask=1 << index)
        ch.enabled = False
        ch.amplitude_ua = 0
        if code == FaultCode.COMPLIANCE:
            ch.compliance_flag = True
        self._emit("fault", now, code=code.name, channel=index)
        return self._event_frame(Fault(self._device_time_ms(now), code, index))

    def _supervise_loads(self, now: float) -> bytes:
        out = bytearray()
        limit = self.config.compliance_mv * 1000
        for i, ch in enumerate(self._channels):
            if not (ch.enabled and ch.amplitude_ua):
                continue
            if ch.load_ohm == OPEN_CIRCUIT_OHM:
                out += self._channel_fault(i, FaultCode.OPEN_CIRCUIT, now)
            elif ch.amplitude_ua * ch.load_ohm > limit:
                out += self._channel_fault(i, FaultCode.COMPLIANCE, now)
        return bytes(out)

    def _telemetry(self, now: float) -> bytes:
        out = bytearray()
        time_ms = self._device_time_ms(now)
        for i, ch in enumerate(self._channels):
            flags = (Telemetry.FLAG_ENABLED if ch.enabled else 0) | (
                Telemetry.FLAG_COMPLIANCE_LIMITED if ch.compliance_flag else 0
            )
            ch.compliance_flag = False
            waveform = (ch.shape, ch.asym_ratio, ch.burst_pulses, ch.interphase_us, ch.burst_rate_mhz) \
                if self._session_version >= 2 else ()
            out += self._event_frame(Telemetry(
                time_ms, i, flags, self._latched, ch.amplitude_ua, ch.frequency_mhz, ch.phase_us,
                ch.load_ohm, math.floor(ch.charge_nc / 1000) & _U32, *waveform,
            ))
        return bytes(out)

    def _counters(self) -> dict[str, int]:
        return {
            "rx_frames": self._rx_frames,
            "rx_bad_frames": self._rx_bad,
            "rx_out_of_order": self._rx_out_of_order,
            "tx_frames": self._tx_frames,
        }


_DEVICE_WIDE_MASK = sum(1 << code for code in DEVICE_WIDE_FAULTS)
_SHAPES = frozenset(int(shape) for shape in Shape)
_FAULT_CODES = frozenset(int(code) for code in FaultCode)


def _bits(mask: int) -> list[int]:
    return [i for i in range(mask.bit_length()) if mask >> i & 1]
