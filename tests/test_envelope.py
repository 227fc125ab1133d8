"""The patient's envelope enforced at the wire (issue 19): each way past it that the third review
found, closed in `safety/` and proved over a real byte path (the simulator as its own process on
a pseudo-terminal) or through the visit store, whatever built the frame: the API, `estim run`
direct or with a program, the console, a titration."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import firmware_host as fh
from firmware_host import icd, units
from firmware_host.cli.options import parse_sites
from firmware_host.drivers import open_transport
from firmware_host.drivers.base import Transport
from firmware_host.link import Link
from firmware_host.sim.process import SimProcess, child_env, spawn_sim
from firmware_host.stimulator import Stimulator
from firmware_host.sim import SimConfig
from safety import (ChannelSetting, ChannelThresholds, Envelope, Interlock, Needle, Prescription, Refusal, Screening,
                    SessionSetup, Shape, TitrationWaveform, read_entries)
from safety.screening import Question

from support import BENCH, REPO, SpyTransport, forearm_sites, prescription, wait_for

pytestmark = pytest.mark.timeout(60)

FOREARM = "left:forearm,left:forearm"
W20 = TitrationWaveform(Shape.BIPHASIC, 20.0, 200.0)
TOLERANCE_MA = 3.0      # the ceiling is 0.9 x 3.0 = 2.7 mA


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimProcess]:
    with spawn_sim("pty", trace_path=tmp_path / "device-trace.jsonl") as process:
        yield process


def estim(*args: str, timeout: float = 40) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "firmware_host", *args], capture_output=True, text=True,
                          env=child_env(), timeout=timeout, stdin=subprocess.DEVNULL, cwd=REPO)


def thresholds(who: str, waveform: TitrationWaveform = W20, sites: str = FOREARM, channel: int = 1,
               when: datetime | None = None, tolerance: float = TOLERANCE_MA) -> ChannelThresholds:
    return ChannelThresholds(channel, parse_sites(sites), waveform, when or datetime.now(timezone.utc),
                             tolerance / 3, tolerance * 2 / 3, tolerance, who)


def todays_visit(code: str, *measured: ChannelThresholds, yes: tuple[Question, ...] = (),
                 sensitivity: str = "typical") -> None:
    """A patient screened today in the default visit store (each test has its own), with thresholds."""
    from firmware_host.visits import VisitStore

    with VisitStore() as store:
        store.add_patient(code, sensitivity)
        visit = store.start_visit(code, Screening({q: q in yes for q in Question}), clinician="JD")
        for t in measured:
            store.add_thresholds(visit, t)


def direct(device: str, *extra: str, amplitude: float = 2.0, frequency: float = 20) -> list[str]:
    return ["run", "--device", device, "--channel", "1", "--frequency", str(frequency), "--pulse-width", "200",
            "--amplitude", str(amplitude), "--seconds", "0.5", "--ramp", "2", "--sites", FOREARM, "--inserted",
            "10", *extra]


def session_setup(record: Path) -> dict:
    return next(e["data"] for e in read_entries(record) if e["kind"] == "session_setup")


def nothing_sent(record: Path) -> bool:
    """No command reached the wire in the session this record tells (or none was opened)."""
    return not record.exists() or not any(e["kind"] == "consumed" for e in read_entries(record))


# --- every path meets the patient's ceiling ---------------------------------------------------


def test_a_direct_run_above_todays_ceiling_is_refused_and_within_it_runs(sim: SimProcess, tmp_path: Path) -> None:
    todays_visit("P1", thresholds("P1"))
    over = estim(*direct(sim.url, "--patient", "P1", "--record", str(tmp_path / "over.jsonl"), amplitude=2.8))
    assert over.returncode == 2, over.stderr
    assert "above this patient's ceiling of 2.7 mA (0.9 x tolerance 3 mA" in over.stderr
    assert nothing_sent(tmp_path / "over.jsonl")
    within = estim(*direct(sim.url, "--patient", "P1", "--record", str(tmp_path / "ok.jsonl"), amplitude=2.7))
    assert within.returncode == 0, within.stderr
    assert session_setup(tmp_path / "ok.jsonl")["envelope"]["subject"] == "patient"


def test_a_waveform_nobody_titrated_is_refused_saying_what_to_titrate(sim: SimProcess, tmp_path: Path) -> None:
    todays_visit("P2", thresholds("P2"))
    done = estim(*direct(sim.url, "--patient", "P2", frequency=100, amplitude=1.0))
    assert done.returncode == 2, done.stderr
    assert "titrate channel 1 on 100 Hz, 200 µs first" in done.stderr and "Traceback" not in done.stderr


def test_the_api_meets_the_envelope_on_every_frame(sim: SimProcess) -> None:
    """A script building its own frames: above the ceiling, or on an untitrated waveform, nothing
    reaches the wire."""
    spy = SpyTransport(open_transport(sim.url))
    link = Link(spy)
    link.open(2.0)
    envelope = Envelope.research("protocol 7", "S1", thresholds=[thresholds("S1")])
    setup = SessionSetup(units.device_limits(link.identity), prescription(), forearm_sites(1), envelope=envelope)
    with Stimulator(link, setup) as stim:
        stim.configure(1, frequency_hz=20, pulse_width_us=200)
        stim.enable(1)
        stim.ramp(1, 2.7)
        sent = spy.output_changing()
        for attempt in (lambda: stim.set_amplitude(1, 2.75),
                        lambda: stim.configure(1, frequency_hz=100, pulse_width_us=200),
                        lambda: stim.ramp(1, 3.0)):
            with pytest.raises(Refusal) as exc:
                attempt()
            assert exc.value.rule in ("envelope.ceiling", "envelope.no_threshold")
        assert spy.output_changing() == sent
    peak = max(m.amplitude_ua for _, m in spy.frames if isinstance(m, icd.SetChannel))
    assert peak == 2700


def test_a_wider_phase_at_the_same_current_is_refused_on_the_wire(sim: SimProcess) -> None:
    """10 mA at 50 µs -> 10 mA at 200 µs is 1.43 -> 4.0 x rheobase: a rise, refused with the
    amplitude the wider phase may start at."""
    rx = Prescription(max_amplitude_ma=10, ramp_ma_per_s=2, frequency_hz=(2, 20), pulse_width_us=(50, 200),
                      sensitivity="hyposensitive")
    with fh.open(sim.url, prescription=rx, placements=forearm_sites(1), envelope=BENCH) as stim:
        stim.configure(1, frequency_hz=2, pulse_width_us=50)
        stim.enable(1)
        stim.ramp(1, 10.0)
        with pytest.raises(Refusal) as exc:
            stim.apply(ChannelSetting(1, Shape.BIPHASIC, 2, 200, 10.0))
        assert exc.value.rule == "dynamic.intensity_step" and exc.value.detail == "strength"
        start_at = float(re.search(r"start this waveform at ([\d.]+) mA or less", str(exc.value)).group(1))
        assert 3.571 <= start_at <= 4.571   # the strength delivered (1.43), plus what the ramp clock allows now
        stim.apply(ChannelSetting(1, Shape.BIPHASIC, 2, 200, start_at))


def test_a_program_or_a_step_cap_above_the_ceiling_is_refused_before_anything_is_sent(sim: SimProcess,
                                                                                      tmp_path: Path) -> None:
    todays_visit("P3", thresholds("P3"))
    program = tmp_path / "steps.toml"
    program.write_text(PROGRAM_WITH_A_STEP_CAP)
    record = tmp_path / "steps.jsonl"
    done = estim("run", "--device", sim.url, "--program", str(program), "--patient", "P3", "--record", str(record))
    assert done.returncode == 2, done.stderr
    assert "above this patient's ceiling" in done.stderr and "breaks the rules above" in done.stderr
    assert nothing_sent(record)


PROGRAM_WITH_A_STEP_CAP = """name = "steps past the ceiling"
mechanism = "peripheral_analgesia"
[prescription]
max_minutes = 5
ramp_rate_ma_per_s = 1.0
sensitivity = "hyposensitive"
[prescription.max_amplitude_ma]
1 = 6.0
[needles.1]
diameter_mm = 0.25
length_mm = 15
inserted_mm = 10
site_a = { region = "forearm", side = "left" }
site_b = { region = "forearm", side = "left" }
[[segments]]
duration_s = 120
[segments.channels.1]
pattern = "continuous"
frequency_hz = 20
pulse_width_us = 200
intensity = 2.0
ramp = { in_s = 10, out_s = 5 }
step = { step_ma = 0.5, every_s = 30, cap = 4.0 }
"""


def test_one_sensitivity_the_stricter_of_visit_and_program(sim: SimProcess) -> None:
    """A program file's profile never loosens the patient's."""
    hypo = Prescription(max_amplitude_ma=10, frequency_hz=(2, 20), pulse_width_us=(200, 200), sensitivity="hyposensitive")
    visit = Envelope.for_visit("P4", "1", Screening({q: False for q in Question}), "hypersensitive")
    with fh.open(sim.url, prescription=hypo, placements=forearm_sites(1), envelope=visit) as stim:
        assert stim.interlock.sensitivity.value == "hypersensitive"
        assert stim.interlock.limits(1).max_amplitude_ma == pytest.approx(6.0)   # 10 x 0.6, not 10 x 1.0


# --- thresholds come from one place, usable only now ------------------------------------------


def test_with_a_patient_thresholds_come_from_the_store_only(tmp_path: Path) -> None:
    todays_visit("P5", thresholds("P5"))
    file = tmp_path / "th.json"
    from safety.thresholds import save

    save(file, [thresholds("P5")])
    both = estim("run", "--patient", "P5", "--preset", "segmental_inhibition", "--channel", "1", "--sites", FOREARM,
                 "--inserted", "10", "--thresholds", str(file))
    assert both.returncode == 2 and "from today's visit in the visit store only" in both.stderr
    save(file, [thresholds("")])
    nameless = estim("check", "--preset", "segmental_inhibition", "--sites", FOREARM, "--inserted", "10",
                     "--thresholds", str(file))
    assert nameless.returncode == 2 and "name no patient" in nameless.stderr


@pytest.mark.parametrize("shift,why", [(timedelta(minutes=2), "later than this computer's time"),
                                       (timedelta(hours=-13), "more than 12 hours ago")])
def test_a_threshold_dated_ahead_or_too_old_never_sets_a_dose(sim: SimProcess, shift: timedelta, why: str) -> None:
    """Rooms sharing a store may disagree on the time: a threshold from the future is not usable."""
    todays_visit("P6", thresholds("P6", when=datetime.now(timezone.utc) + shift))
    done = estim(*direct(sim.url, "--patient", "P6", amplitude=1.0))
    assert done.returncode == 2 and why in done.stderr, done.stderr


# --- clearing a stop is a named person's act ---------------------------------------------------


def test_a_clear_inside_a_treating_run_clears_only_a_stop_or_a_lost_controller(sim: SimProcess,
                                                                                 tmp_path: Path) -> None:
    with fh.open(sim.url, prescription=prescription(), placements=forearm_sites(1), envelope=BENCH) as stim:
        stim.sim_control(icd.SimOp.INJECT_FAULT, 0, icd.FaultCode.OVERCURRENT)
        wait_for(lambda: stim.tripped is not None)
    nameless = estim(*direct(sim.url, "--test-load", "--clear-faults"))
    assert nameless.returncode == 3 and "(--operator NAME)" in nameless.stderr
    treating = estim(*direct(sim.url, "--test-load", "--clear-faults", "--operator", "J. Doe"))
    assert treating.returncode == 3 and "OVERCURRENT is latched" in treating.stderr
    assert "estim clear-faults" in treating.stderr
    unnamed = estim("clear-faults", "--device", sim.url, "--operator", "J. Doe")
    assert unnamed.returncode == 2 and "--fault overcurrent" in unnamed.stderr
    digits = estim("clear-faults", "--device", sim.url, "--operator", "１２", "--fault", "overcurrent")
    assert digits.returncode == 2 and "at least two letters" in digits.stderr
    cleared = estim("clear-faults", "--device", sim.url, "--operator", "Ｊ. Doe", "--fault", "overcurrent", "--json")
    assert cleared.returncode == 0 and json.loads(cleared.stdout)["operator"] == "J. Doe"   # NFKC
    assert estim(*direct(sim.url, "--test-load")).returncode == 0


def test_the_operator_is_never_the_login_name(sim: SimProcess, tmp_path: Path) -> None:
    record = tmp_path / "r.jsonl"
    done = estim(*direct(sim.url, "--test-load", "--record", str(record)))
    assert done.returncode == 0
    plan = next(e["data"] for e in read_entries(record) if e["kind"] == "session_plan")
    assert plan["operator"] is None


# --- a person is screened before a real device stimulates ----------------------------------------


def test_a_device_other_than_the_simulator_needs_to_know_who_is_connected(sim: SimProcess, tmp_path: Path) -> None:
    record = tmp_path / "undeclared.jsonl"
    refused = estim(*direct(sim.url, "--record", str(record)))
    assert refused.returncode == 2 and "nobody was screened" in refused.stderr and "--test-load" in refused.stderr
    assert nothing_sent(record) and any(e["kind"] == "not_started" for e in read_entries(record))
    loaded = tmp_path / "load.jsonl"
    assert estim(*direct(sim.url, "--test-load", "1 kOhm", "--record", str(loaded))).returncode == 0
    assert session_setup(loaded)["envelope"]["subject"] == "test_load"
    assert session_setup(loaded)["envelope"]["who"] == "1 kOhm"
    simulator = estim(*direct("sim://", "--record", str(tmp_path / "sim.jsonl")))   # the README's first command
    assert simulator.returncode == 0 and "connected: nothing declared" in simulator.stderr


def test_the_link_refuses_an_undeclared_session_on_anything_but_the_simulator(sim: SimProcess) -> None:
    with pytest.raises(Refusal) as exc:
        fh.open(sim.url, prescription=prescription(), placements=forearm_sites(1))
    assert exc.value.rule == "envelope.unscreened"
    link = fh.connect(sim.url)   # a session that treats nobody (clearing faults) needs no declaration
    with Stimulator(link, SessionSetup(units.device_limits(link.identity), prescription(), {})) as clearing:
        assert clearing.channels == ()
    with fh.open("sim://", prescription=prescription(), placements=forearm_sites(1)) as stim:
        assert stim.interlock.setup.envelope.subject.value == "undeclared"


def test_pregnancy_refuses_li4_from_todays_screening(sim: SimProcess) -> None:
    todays_visit("P7", yes=(Question.PREGNANT,))
    done = estim("run", "--device", sim.url, "--patient", "P7", "--channel", "1", "--frequency", "2",
                 "--pulse-width", "200", "--amplitude", "1", "--seconds", "1", "--sites",
                 "left:hand:LI4,left:forearm", "--inserted", "10")
    assert done.returncode == 2 and "refused in pregnancy" in done.stderr


def test_channels_that_run_together_may_not_make_a_path_across_the_chest(sim: SimProcess) -> None:
    hands = {1: parse_sites("left:hand,left:forearm"), 2: parse_sites("right:hand,right:forearm")}
    with pytest.raises(Refusal) as exc:
        fh.open(sim.url, prescription=prescription(), placements=hands, envelope=BENCH)
    assert exc.value.rule == "placement.between_channels"
    legs = {1: parse_sites("left:lower_leg,left:foot"), 2: parse_sites("right:lower_leg,right:foot")}
    with fh.open(sim.url, prescription=prescription(), placements=legs, envelope=BENCH) as stim:
        assert stim.channels == (1, 2)


# --- the session's version is its telemetry's version ----------------------------------------------


class ShortReadings(Transport):
    """A v2 device that sends v1 readings: every TELEMETRY from the device cut to its 26-byte form."""

    def __init__(self, inner: Transport) -> None:
        super().__init__(inner.url)
        self.inner = inner
        self._decoder = icd.FrameDecoder()

    def read(self, timeout: float) -> bytes:
        out = b""
        for raw in self._decoder.feed(self.inner.read(timeout)):
            message = raw.message()
            if isinstance(message, icd.Telemetry) and message.shape is not None:
                message = icd.Telemetry(*[getattr(message, f) for f in
                                          ("device_time_ms", "channel", "flags", "latched_faults", "amplitude_ua",
                                           "frequency_mhz", "phase_us", "load_ohm", "charge_total_uc")])
            out += icd.encode_frame(raw.seq, message)
        return out

    def write(self, data: bytes) -> None:
        self.inner.write(data)

    def _close(self) -> None:
        self.inner.close()


def test_short_readings_in_a_v2_session_are_a_protocol_error(sim: SimProcess) -> None:
    """A device that sends 26-byte readings in a v2 session used to switch off the whole-waveform
    check; now the link refuses it and the output is stopped."""
    link = Link(ShortReadings(open_transport(sim.url)))
    link.open(2.0)
    assert link.protocol_version == 2
    sim.trace.mark()
    with Stimulator(link, SessionSetup(units.device_limits(link.identity), prescription(), forearm_sites(1),
                                       envelope=BENCH)) as stim:
        wait_for(lambda: stim.tripped is not None, timeout=5)
        assert "26 bytes in an ICD v2 session" in stim.tripped
        with pytest.raises(Exception):
            stim.enable(1)


# --- titration at a ceiling -------------------------------------------------------------------------


def test_titration_ramps_only_as_high_as_the_rules_allow_and_keeps_nothing_without_a_top_mark(
        sim: SimProcess, tmp_path: Path) -> None:
    """The dense-disperse program's 600 µs phase on 25 mm of needle: charge density stops the
    ramp at 6.8 mA, long before the 8.5 mA cap. Each waveform is ramped to where the rule stops
    it, the titration says so, keeps nothing and exits 2."""
    out, record, said = tmp_path / "th.json", tmp_path / "titration.jsonl", tmp_path / "stderr.txt"
    with said.open("w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "firmware_host", "titrate", "--device", sim.url, "--program",
                                 str(REPO / "firmware_host" / "programs" / "dense_disperse_2_100hz.toml"), "--channel", "1", "--ramp",
                                 "2", "--research-protocol", "R1", "--subject", "S1", "--out", str(out), "--record",
                                 str(record)], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=stderr,
                                env=child_env(), cwd=REPO)
        proc.wait(timeout=50)   # no key is pressed, and the input stays open (its end would be an e-stop)
        assert proc.stdin is not None
        proc.stdin.close()
    err = said.read_text()
    assert proc.returncode == 2, err
    assert "on 2 Hz, 600 µs (waveform 1 of 2): from 0 to at most 6.806 mA" in err and "charge density" in err
    assert "stopped rising at" in err and "no top mark on 2 Hz, 600 µs and 100 Hz, 200 µs" in err
    assert not out.exists()
    readings = [r["data"] for r in read_entries(record) if r["kind"] == "telemetry"]
    assert 6000 < max(r["amplitude_ua"] for r in readings if r["phase_us"] == 600) <= 6806
    assert 8000 < max(r["amplitude_ua"] for r in readings if r["phase_us"] == 200) <= 8500   # the cap, 10 x 0.85


def _titrations() -> list[tuple[str, object, int]]:
    from firmware_host.waveforms import Mechanism, Needle, Program, Site, preset_program

    forearm = Needle(diameter_mm=0.25, length_mm=15, inserted_mm=10, site_a=Site(region="forearm", side="left"),
                     site_b=Site(region="hand", side="left", point="LI4"))
    cases = [(f"{path.stem} ch{ch}", program, ch) for path in sorted((REPO / "firmware_host" / "programs").glob("*.toml"))
             for program in [Program.load(path)] for ch in sorted(program.needles)]
    cases += [(f"{m.value} preset", preset_program(m, {1: forearm}, "typical"), 1) for m in Mechanism]
    return cases


@pytest.mark.parametrize("name,program,channel", _titrations(), ids=[c[0] for c in _titrations()])
def test_every_shipped_program_and_preset_can_be_titrated_on_every_channel_it_uses(name, program, channel) -> None:
    """What `estim titrate` sets up for it: each waveform ramps from 0 to at least 2 mA before a
    rule (the cap, charge density) stops it, so a patient's thresholds can be found."""
    waves = program.titration_waveforms(channel, relative_only=False)
    rx = Prescription(max_amplitude_ma=10, ramp_ma_per_s=0.2, frequency_hz=(min(w.frequency_hz for w in waves),
                                                                            max(w.frequency_hz for w in waves)),
                      pulse_width_us=(min(w.pulse_width_us for w in waves), max(w.pulse_width_us for w in waves)))
    needle = program.needles[channel]
    setup = SessionSetup(units.device_limits(SimConfig().identity()), rx, {channel: needle.placement()},
                         {channel: Needle(needle.diameter_mm, needle.inserted_mm)},
                         Envelope.undeclared().titration(channel, waves))
    interlock = Interlock(setup)
    for wave in waves:
        setting = ChannelSetting(channel, wave.shape, wave.frequency_hz, wave.pulse_width_us, 0.0,
                                 burst_pulses=wave.burst_pulses, burst_rate_hz=wave.burst_rate_hz)
        highest, _ = interlock.highest_allowed(setting)
        assert highest >= 2.0, (name, str(wave), highest)
