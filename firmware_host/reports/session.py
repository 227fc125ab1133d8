"""One session, as its treatment record tells it: the common source of `estim record show`,
the PDF report and the FHIR export.

Read in one pass over `safety.read_entries`. Times on the plot axis are the device's own
(telemetry `device_time_ms`, fault `device_time_s`); host-side events (stops, e-stops,
patient feedback, refusals) are placed on it through the smallest host-minus-device
offset seen in telemetry, i.e. to within one telemetry block's buffering (≤ 1 s, usually
one reading period). Intensity is as the device reported it, at 10 readings a second.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

FLAG_ENABLED = 0x01  # ICD Telemetry flags (kept here so `--help` does not import the ICD)
FLAG_COMPLIANCE_LIMITED = 0x02
OPEN_LOAD = 0xFFFFFFFF


class Sample(NamedTuple):
    """One reading of one channel: device time, what reached the needle (0 when off)."""

    t_s: float
    ma: float
    hz: float
    phase_us: float
    shape: int
    burst_pulses: int = 0
    burst_rate_hz: float = 0.0

    @property
    def rate(self) -> tuple[float, int, float]:
        """Pulse rate and burst structure (what the rate panel draws one row for)."""
        return self.hz, self.burst_pulses, self.burst_rate_hz


@dataclass
class ChannelOutput:
    """One channel's output as the device reported it (1-based channel)."""

    channel: int
    peak_ma: float = 0.0
    on_s: float = 0.0
    charge_device_uc: float = 0.0
    frequencies_hz: set[float] = field(default_factory=set)
    pulse_widths_us: set[float] = field(default_factory=set)
    load_min_ohm: float | None = None
    load_max_ohm: float | None = None
    compliance_limited_readings: int = 0
    samples: list[Sample] = field(default_factory=list)


@dataclass(frozen=True)
class Event:
    """Something to mark on the intensity plot."""

    t_s: float | None      # device time; None when it cannot be placed
    kind: str              # stop, estop, fault, feedback, refusal, notice
    channel: int | None
    text: str


@dataclass(frozen=True)
class ChannelDose:
    """What was set on a channel, from the approved commands."""

    channel: int
    shapes: tuple[str, ...]
    frequencies_hz: tuple[float, ...]
    pulse_widths_us: tuple[float, ...]
    max_amplitude_ma: float
    burst: tuple[tuple[int, float], ...]     # (pulses, burst rate Hz) when bursting


@dataclass
class Session:
    path: Path
    started: str | None = None
    ended: str | None = None
    record_id: str | None = None
    plan: dict[str, Any] = field(default_factory=dict)
    setup: dict[str, Any] = field(default_factory=dict)
    identity: dict[str, Any] = field(default_factory=dict)
    thresholds: list[dict[str, Any]] = field(default_factory=list)
    feedback: list[dict[str, Any]] = field(default_factory=list)
    commands: Counter[str] = field(default_factory=Counter)
    naks: list[dict[str, Any]] = field(default_factory=list)
    faults: list[dict[str, Any]] = field(default_factory=list)
    refusals: list[dict[str, Any]] = field(default_factory=list)
    stops: list[str] = field(default_factory=list)
    not_started: str | None = None  # why the session never reached the device, when it did not
    notices: list[dict[str, Any]] = field(default_factory=list)
    session_end: bool = False
    closed: bool = False
    outputs: list[ChannelOutput] = field(default_factory=list)
    doses: list[ChannelDose] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    @property
    def operator(self) -> str | None:
        return self.plan.get("operator") or None

    @property
    def device(self) -> dict[str, Any]:
        ident = self.identity
        return {"serial": ident.get("serial"), "channels": ident.get("channels"),
                "firmware": f"{ident.get('fw_major')}.{ident.get('fw_minor')}" if ident else None}

    @property
    def patient_code(self) -> str | None:
        """The patient's code when the session was run for a patient (`--patient CODE`)."""
        return self.plan.get("patient") or None


def read_session(path: str | Path, entries: Iterable[dict[str, Any]] | None = None) -> Session:
    """Everything the signed part of the record says about the session, in one pass (over
    `entries` when they were read already, as `safety.read_record` gives them)."""
    from safety import read_entries

    s = Session(Path(path))
    channels: dict[int, ChannelOutput] = {}
    settings: dict[int, list[dict[str, Any]]] = {}
    host_events: list[tuple[float, str, int | None, str]] = []
    offset: float | None = None
    for e in read_entries(path) if entries is None else entries:
        kind, d = e["kind"], e["data"]
        s.started = s.started or e["t"]
        s.ended = e["t"] or s.ended
        if kind == "telemetry":
            if "channel" in d and "device_time_ms" in d:
                t = d["device_time_ms"] / 1000
                offset = e["mono"] - t if offset is None else min(offset, e["mono"] - t)
                _reading(channels, d, t)
            continue
        if kind == "open":
            s.record_id = d.get("record_id")
        elif kind == "session_plan" and not s.plan:
            s.plan = d
        elif kind == "session_setup" and not s.setup:
            s.setup = d
        elif kind == "identity" and not s.identity:
            s.identity = d
        elif kind == "thresholds":
            s.thresholds.append({**d, "t": e["t"]})
        elif kind == "patient_feedback":
            s.feedback.append(d)
            host_events.append((e["mono"], "feedback", d.get("channel"), f"{d.get('feedback')}"))
        elif kind == "approved":
            command = d.get("command", {})
            s.commands[command.get("type", "?")] += 1
            if command.get("type") == "SetChannel" and isinstance(command.get("setting"), dict):
                setting = command["setting"]
                settings.setdefault(int(setting.get("channel", 0)), []).append(setting)
        elif kind == "nak":
            s.naks.append(d)
        elif kind == "fault":
            s.faults.append(d)
            s.events.append(Event(d.get("device_time_s"), "fault", d.get("channel"), str(d.get("code"))))
        elif kind == "refusal":
            s.refusals.append(d)
            host_events.append((e["mono"], "refusal", d.get("channel"), str(d.get("rule"))))
        elif kind == "not_started":
            s.not_started = f"{d.get('outcome')}: {d.get('why')}"
        elif kind == "stop":
            s.stops.append(str(d.get("reason")))
            host_events.append((e["mono"], "stop", None, str(d.get("reason"))))
        elif kind == "estop":
            host_events.append((e["mono"], "estop", None, str(d.get("reason"))))
        elif kind == "operator_stop":
            host_events.append((e["mono"], "estop", None, "operator STOP"))
        elif kind == "action" and d.get("kind") == "notify":
            s.notices.append(d)
        elif kind == "session_end":
            s.session_end = True
        s.closed = kind == "close"
    s.events += [Event(None if offset is None else mono - offset, kind, ch, text)
                 for mono, kind, ch, text in host_events]
    s.outputs = [channels[ch] for ch in sorted(channels) if channels[ch].peak_ma > 0 or channels[ch].on_s > 0]
    s.doses = [_dose(ch, rows) for ch, rows in sorted(settings.items()) if rows]
    return s


def _reading(channels: dict[int, ChannelOutput], d: dict[str, Any], t: float) -> None:
    """Fold one reading (wire units: µA, mHz, µs, 0-based channel) into its channel."""
    ch = int(d["channel"]) + 1
    out = channels.setdefault(ch, ChannelOutput(ch))
    on = bool(d.get("flags", 0) & FLAG_ENABLED)
    ma = d.get("amplitude_ua", 0) / 1000 if on else 0.0
    hz = d.get("frequency_mhz", 0) / 1000
    if out.samples and out.samples[-1].ma > 0:
        out.on_s += max(0.0, t - out.samples[-1].t_s)
    out.samples.append(Sample(t, ma, hz if on else 0.0, float(d.get("phase_us", 0)), int(d.get("shape") or 0),
                              int(d.get("burst_pulses") or 0), (d.get("burst_rate_mhz") or 0) / 1000))
    out.peak_ma = max(out.peak_ma, ma)
    out.charge_device_uc = max(out.charge_device_uc, float(d.get("charge_total_uc", 0)))
    if on:
        out.frequencies_hz.add(hz)
        out.pulse_widths_us.add(float(d.get("phase_us", 0)))
        if d.get("flags", 0) & FLAG_COMPLIANCE_LIMITED:
            out.compliance_limited_readings += 1
        load = d.get("load_ohm", OPEN_LOAD)
        if load != OPEN_LOAD:
            out.load_min_ohm = load if out.load_min_ohm is None else min(out.load_min_ohm, load)
            out.load_max_ohm = load if out.load_max_ohm is None else max(out.load_max_ohm, load)


def _dose(channel: int, rows: list[dict[str, Any]]) -> ChannelDose:
    live = [r for r in rows if r.get("amplitude_ma", 0) > 0] or rows
    return ChannelDose(
        channel,
        tuple(sorted({str(r.get("shape", "?")).lower() for r in live})),
        tuple(sorted({float(r.get("frequency_hz", 0)) for r in live})),
        tuple(sorted({float(r.get("pulse_width_us", 0)) for r in live})),
        max(float(r.get("amplitude_ma", 0)) for r in rows),
        tuple(sorted({(int(r["burst_pulses"]), float(r.get("burst_rate_hz", 0))) for r in live
                      if r.get("burst_pulses")})),
    )


def output_summaries(session: Session) -> tuple[list[Any], str]:
    """`safety.output_summary` (per-channel summaries and their table) of what the readings
    show was delivered: each reading holds until the next one of its channel, so the summary
    has the telemetry's resolution (0.1 s at 10 readings a second)."""
    from safety import AppliedDose, ChannelSetting, Needle, Shape, output_summary

    spans: dict[tuple[int, float, float, float, int], float] = {}
    for o in session.outputs:
        for a, b in zip(o.samples, o.samples[1:]):
            if a.ma > 0 and a.hz > 0:
                key = (o.channel, a.ma, a.hz, a.phase_us, a.shape)
                spans[key] = spans.get(key, 0.0) + (b.t_s - a.t_s)
    doses = [AppliedDose(ch, ChannelSetting(ch, Shape(shape), hz, width, ma), True, seconds)
             for (ch, ma, hz, width, shape), seconds in spans.items() if width > 0]
    declared = session.setup.get("needles") or {}
    needles = {o.channel: Needle(**declared[str(o.channel)]) if str(o.channel) in declared else Needle()
               for o in session.outputs}
    if not needles:
        return [], "no channel delivered output"
    return output_summary(doses, needles, {o.channel: o.charge_device_uc for o in session.outputs})
