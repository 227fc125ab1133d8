"""What the HIL suite needs around the product: sessions (optionally through the
fault-injecting transport), a raw ICD client and the one deliberately unguarded command
path (`unguarded`, `ask`, `wave`: the unit tests and benchmarks play a faulty host through
these too). The simulator as its own process and its trace are `firmware_host.sim.process`.

Nothing here imports tests/support.py: the suite must run against real hardware from a
checkout without the unit tests.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from firmware_host import icd, units
from firmware_host.drivers import Transport, open_transport
from firmware_host.link import Link, LinkLost
from firmware_host.sim.process import child_env
from firmware_host.stimulator import DeviceFault, Notice, Stimulator
from safety import (ROUTINE_FAULTS, ChannelPlacement, ChannelReading, ChannelSetting, Envelope, NeedleSite, Prescription,
                    Region, SessionSetup, Side, TreatmentRecord)

REPO = Path(__file__).resolve().parents[1]
OPERATOR = "hil-suite"


# --- sessions --------------------------------------------------------------------------

def forearm(*channels: int) -> dict[int, ChannelPlacement]:
    site = NeedleSite(Region.FOREARM, Side.LEFT)
    return {ch: ChannelPlacement(site, site) for ch in channels}


def prescription(max_ma: float = 10.0) -> Prescription:
    """Wide enough for every preset; the effective ramp is then the device's (80 % of slew)."""
    return Prescription(max_amplitude_ma=max_ma, ramp_ma_per_s=2.0, frequency_hz=(1, 200),
                        pulse_width_us=(50, 600), sensitivity="hyposensitive")


RIG = Envelope.test_load("HIL rig: the stimulator's test load")
"""What the acceptance suite declares: a bench load is connected, nobody is."""


def open_session(url: str, channels: tuple[int, ...] | None = None,
                 wrap: Callable[[Transport], Transport] | None = None, *, rx: Prescription | None = None,
                 record: TreatmentRecord | None = None, operator: str = OPERATOR, envelope: Envelope = RIG,
                 **link_options: Any) -> Stimulator:
    """`firmware_host.open` with an optional transport wrapper (the fault proxy) on the given
    channels (default: every channel the device has), declaring `envelope` (default: the rig's
    test load), starting clean: faults a previous test or host latched are cleared in
    `operator`'s name, as an operator would (a fault beyond a stop or a lost controller in a
    session of its own, named, as `estim clear-faults --fault` does).

    Every session the suite and the clinic day start goes through here (one place to say
    what a session needs)."""
    def connect() -> tuple[Link, icd.Identity]:
        transport = open_transport(url)
        opened = Link(wrap(transport) if wrap else transport, **link_options)
        try:
            return opened, opened.open(2.0)
        except BaseException:
            opened.close()
            raise

    link, identity = connect()
    try:
        serious = frozenset(f.name for f in icd.faults_from_mask(identity.latched_faults)) - ROUTINE_FAULTS
        if serious:
            with Stimulator(link, SessionSetup(units.device_limits(identity), prescription(), {})) as clearing:
                clearing.clear_faults(operator, serious)
            link, identity = connect()
        channels = channels or tuple(range(1, identity.channels + 1))
        setup = SessionSetup(device=units.device_limits(identity), prescription=rx or prescription(),
                             placements=forearm(*channels), needles={}, envelope=envelope)
        stim = Stimulator(link, setup, record=record)
    except BaseException:
        link.close()
        raise
    if stim.tripped is not None:
        stim.clear_faults(operator)
    return stim


def thresholds_on(program: Any, values: Any, who: str, when: Any = None) -> list[Any]:
    """Thresholds as `estim titrate` keeps them, measured (now, or `when`) on every channel of
    `program` that needs them (every channel when none does), on its sites and each of its
    waveforms. `values`: kind -> mA for every channel, or channel -> such a mapping."""
    from datetime import datetime, timezone

    from safety import ChannelThresholds

    per_channel = all(isinstance(k, int) for k in values)
    channels = sorted({ch for ch, _ in program.needed_thresholds}) or sorted(program.needles)
    return [ChannelThresholds(ch, program.needles[ch].placement(), wave, when or datetime.now(timezone.utc),
                              marks.get("sensory"), marks.get("motor"), marks.get("tolerance"), who)
            for ch in channels for marks in [values.get(ch, {}) if per_channel else values]
            for wave in program.titration_waveforms(ch, relative_only=False)]


def dosed_in_ma(program: Any, values: Any) -> Any:
    """`program` in mA from fixed thresholds `values`: a rig's test load has no thresholds of its
    own, so a threshold-relative preset is given the currents a patient with these would get."""
    return program.dose(Envelope.undeclared(thresholds=thresholds_on(program, values, "rig"), who="rig"))[0]


@dataclass
class Observed:
    """Everything a session delivered, stamped with host receipt time."""

    readings: list[tuple[float, ChannelReading]] = field(default_factory=list)
    faults: list[tuple[float, DeviceFault]] = field(default_factory=list)
    notices: list[Notice] = field(default_factory=list)
    lost: list[LinkLost] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)

    def __call__(self, event: object) -> None:
        now = time.monotonic()
        with self.changed:
            if isinstance(event, ChannelReading):
                self.readings.append((now, event))
            elif isinstance(event, DeviceFault):
                self.faults.append((now, event))
            elif isinstance(event, Notice):
                self.notices.append(event)
            elif isinstance(event, LinkLost):
                self.lost.append(event)
            self.changed.notify_all()

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        with self.changed:
            return self.changed.wait_for(predicate, timeout)

    def channel(self, channel: int, since: float = float("-inf")) -> list[tuple[float, ChannelReading]]:
        with self.changed:
            return [(t, r) for t, r in self.readings if r.channel == channel and t >= since]


@contextmanager
def observed(stim: Stimulator) -> Iterator[Observed]:
    seen = Observed()
    unsubscribe = stim.subscribe(seen)
    try:
        yield seen
    finally:
        unsubscribe()


# --- playing a faulty host -----------------------------------------------------------------

def unguarded(link: Link, message: icd.Message) -> Future[icd.Message]:
    """Queue a raw message past the interlock, through the link's private `_enqueue`.

    The product refuses unsafe commands before the device sees them, so checking the
    device's own NAK rules (or measuring the bare link) needs a host that misbehaves on
    purpose: only this suite, the unit tests and the benchmarks do this, all through here;
    product code has no such path.
    """
    return link._enqueue(message)  # noqa: SLF001


def ask(link: Link, message: icd.Message, timeout: float = 2.0) -> icd.Message:
    """Send `message` unguarded and wait for its reply (raises on NAK or timeout)."""
    return link.wait(unguarded(link, message), type(message).__name__, timeout)


def wave(channel: int = 0, frequency_mhz: int = 100_000, amplitude_ua: int = 0, phase_us: int = 200,
         burst_pulses: int = 0, burst_rate_mhz: int = 0) -> icd.SetChannel:
    """A biphasic SET_CHANNEL (100 Hz, 200 us phase, 0 uA unless told), as raw as the device takes it."""
    return icd.SetChannel(channel, icd.Shape.BIPHASIC, 1, burst_pulses, frequency_mhz, burst_rate_mhz, phase_us, 0,
                          amplitude_ua)


@dataclass(frozen=True, slots=True)
class UnknownCommand(icd.Message):
    """A message type ICD v1 does not define."""

    TYPE = 0x42  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class ShortSetChannel(icd.Message):
    """SET_CHANNEL with a 3-byte body instead of 20."""

    TYPE = icd.MsgType.SET_CHANNEL
    LAYOUT = icd._layout("BBB")  # noqa: SLF001
    channel: int = 0
    shape: int = 0
    asym_ratio: int = 1


# --- a raw ICD client --------------------------------------------------------------------

class RawClient:
    """Frames with sequence numbers of our choosing and no retransmission: for the rules a
    correct Link never exercises (OUT_OF_ORDER, replay of stored replies, NO_SESSION)."""

    def __init__(self, url: str) -> None:
        self.transport = open_transport(url)
        self.transport.discard_input()
        self._decoder = icd.FrameDecoder()
        self._backlog: list[icd.RawPacket] = []

    def send(self, seq: int, message: icd.Message) -> None:
        self.transport.write(icd.encode_frame(seq, message))

    def reply(self, seq: int, timeout: float = 1.0) -> icd.Message:
        """The next reply carrying `seq` (TELEMETRY and FAULT are skipped)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._backlog:
                self._backlog = self._decoder.feed(self.transport.read(0.02))
                continue
            raw = self._backlog.pop(0)
            message = raw.message()
            if raw.seq == seq and not isinstance(message, (icd.Telemetry, icd.Fault)):
                return message
        raise AssertionError(f"no reply with seq {seq} within {timeout} s")

    def command(self, seq: int, message: icd.Message) -> icd.Message:
        self.send(seq, message)
        return self.reply(seq)

    def close(self) -> None:
        self.transport.close()


# --- a controller in another process, to be killed -----------------------------------------

HOST_SCRIPT = """
import sys, time
from hil_tests.harness import open_session
stim = open_session(sys.argv[1], (1,))
stim.configure(1, frequency_hz=50, pulse_width_us=200)
stim.enable(1)
stim.ramp(1, 1.0)
print("stimulating", flush=True)
time.sleep(60)
"""


def start_host_process(url: str) -> subprocess.Popen[str]:
    """A controller stimulating on channel 1 in its own process (returns once it stimulates)."""
    host = subprocess.Popen([sys.executable, "-c", HOST_SCRIPT, url], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=child_env(), cwd=REPO)
    assert host.stdout is not None
    line = host.stdout.readline().strip()
    if line != "stimulating":
        host.kill()
        raise AssertionError(f"the host process did not start stimulating: {host.stderr.read() if host.stderr else ''}")
    return host


# --- applied timeline against what was programmed ----------------------------------------

Scheduled = tuple[float, ChannelSetting]


def in_effect(schedule: list[Scheduled], start: float, end: float) -> list[ChannelSetting]:
    """Settings of one channel in effect at any instant of [start, end] (schedule time-ordered)."""
    before = [s for t, s in schedule if t <= start][-1:]
    return before + [s for t, s in schedule if start < t <= end]


def matches(reading: ChannelReading, setting: ChannelSetting) -> bool:
    """Telemetry shows `setting` (amplitude to the µA, frequency to 0.1 %, phase to the µs)."""
    return (abs(reading.amplitude_ma - setting.amplitude_ma) <= 0.0011
            and abs(reading.frequency_hz - setting.frequency_hz) <= 1e-3 * setting.frequency_hz + 1e-3
            and abs(reading.pulse_width_us - setting.pulse_width_us) <= 1.0)


def timeline_mismatches(readings: list[tuple[float, ChannelReading]], schedules: dict[int, list[Scheduled]],
                        window_s: float) -> list[str]:
    """Readings (stamped on the host clock) of enabled channels that no scheduled setting in effect
    within ±`window_s` explains, described for the failure message."""
    problems = []
    for t, reading in readings:
        schedule = schedules.get(reading.channel)
        if not schedule or not reading.enabled or t < schedule[0][0]:
            continue
        candidates = in_effect(schedule, t - window_s, t + window_s)
        if not any(matches(reading, s) for s in candidates):
            problems.append(f"ch{reading.channel} at +{t - schedule[0][0]:.3f} s: {reading.amplitude_ma} mA "
                            f"{reading.frequency_hz} Hz {reading.pulse_width_us} us; expected one of "
                            f"{[(s.amplitude_ma, s.frequency_hz, s.pulse_width_us) for s in candidates]}")
    return problems
