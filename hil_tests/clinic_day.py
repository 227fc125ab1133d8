"""A clinic day on one long-running device: sessions back to back as a clinic runs them.

Direct runs, a titration, a preset dosed from it, a program, a console session, an operator's
STOP, an OVERCURRENT the device raises, a device reboot and a controller killed outright
(with the WATCHDOG latch that follows), each stop cleared by name before the next session.
Every step says what must happen (its exit code); a session that stops when it should not
is a false trip. Every treatment record must verify (5, "not closed", only where the
controller was killed). `estim` runs as its own process, as a clinician would run it.

Used by tests/test_clinic_day.py (the simulator, and the independent peer device as ICD v1)
and by `python -m bench --only clinic`. Steps that need SIM_CONTROL are left out on a device
that does not support it (real hardware).
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from firmware_host.sim.process import CHECKOUT, child_env

OPERATOR = "J. Doe"
SITES = "left:forearm,left:forearm"
PROTOCOL, PARTICIPANT = "clinic-day rehearsal", "S01"
DECLARE = ("--research-protocol", PROTOCOL, "--subject", PARTICIPANT)
"""Who is connected, as every session of the day declares it: a rehearsal's participant."""
PROGRAM = """name = "clinic-day check, 3 s"
mechanism = "peripheral_analgesia"

[prescription]
max_minutes = 1
frequency_hz = [2, 20]
pulse_width_us = [200, 200]
ramp_rate_ma_per_s = 1.0
sensitivity = "typical"

[prescription.max_amplitude_ma]
1 = 2.0

[needles.1]
diameter_mm = 0.25
length_mm = 25
inserted_mm = 10
site_a = { region = "forearm", side = "left" }
site_b = { region = "forearm", side = "left" }

[[segments]]
duration_s = 3

[segments.channels.1]
pattern = "continuous"
frequency_hz = 10
pulse_width_us = 200
intensity = 0.8
ramp = { in_s = 1, out_s = 0.5 }
"""


@dataclass
class Step:
    """One thing done on the device, what it must end with, and what it did end with."""

    name: str
    expected: int
    code: int | None = None
    seconds: float = 0.0
    record: Path | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.code == self.expected


@dataclass
class DayReport:
    device: str
    steps: list[Step] = field(default_factory=list)
    verified: dict[str, int] = field(default_factory=dict)  # record name -> `record verify` exit code
    seconds: float = 0.0

    @property
    def sessions(self) -> int:
        return len(self.session_steps)

    @property
    def session_steps(self) -> list[Step]:
        """The steps that opened a session (each has a record)."""
        return [s for s in self.steps if s.record is not None]

    @property
    def bad_records(self) -> dict[str, int]:
        """Records whose `record verify` exit code is not the one expected of them."""
        return {name: code for name, code in self.verified.items() if code != expected_verify(name)}

    @property
    def false_trips(self) -> list[Step]:
        """Steps that stopped (exit 3) where they were to complete."""
        return [s for s in self.steps if s.code == 3 and s.expected == 0]

    @property
    def failures(self) -> list[Step]:
        return [s for s in self.steps if not s.ok]

    def summary(self) -> str:
        lines = [f"{self.device}: {len(self.steps)} steps, {self.sessions} sessions, {self.seconds:.1f} s"]
        lines += [f"  {'ok ' if s.ok else 'BAD'} {s.name}: exit {s.code} (expected {s.expected}) "
                  f"{s.seconds:.2f} s {s.detail}" for s in self.steps]
        lines += [f"  record {name}: verify exit {code}" for name, code in self.verified.items()]
        return "\n".join(lines)


class Day:
    """Runs the steps against `url`; records and files go under `workdir`."""

    def __init__(self, url: str, workdir: Path, sim_control: bool) -> None:
        self.url, self.workdir, self.sim_control = url, workdir, sim_control
        self.report = DayReport(url)
        self.v1 = False  # set from the first session's IDENTITY

    # --- running estim ---------------------------------------------------------------

    @contextmanager
    def _step(self, name: str, expected: int, record: bool = True) -> Iterator[Step]:
        """A step of the day: timed, and in the report however it ends."""
        step = Step(name, expected, record=self._record_path(name) if record else None)
        started = time.monotonic()
        try:
            yield step
        finally:
            step.seconds = time.monotonic() - started
            self.report.steps.append(step)

    def estim(self, name: str, expected: int, *args: str, record: bool = True) -> Step:
        with self._step(name, expected, record) as step:
            argv = [sys.executable, "-m", "firmware_host", *args]
            if step.record is not None:
                argv += ["--record", str(step.record)]
            done = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=child_env(), cwd=CHECKOUT)
            step.code = done.returncode
            if not step.ok:
                step.detail = (done.stderr or done.stdout)[-600:]
        return step

    def _run_args(self, expected: int = 0, channel: int = 1, frequency: float = 20, amplitude: float = 0.4,
                  seconds: float = 0.3) -> tuple[str, ...]:
        return ("run", "--device", self.url, "--channel", str(channel), "--frequency", str(frequency),
                "--pulse-width", "200", "--amplitude", str(amplitude), "--seconds", str(seconds), "--ramp", "2",
                "--sites", SITES, "--inserted", "10", "--operator", OPERATOR, *DECLARE, *self.v1_clear(expected))

    def run(self, name: str, expected: int = 0, channel: int = 1, frequency: float = 20) -> Step:
        return self.estim(name, expected, *self._run_args(expected, channel, frequency))

    def v1_clear(self, expected: int) -> tuple[str, ...]:
        """A v1 device latches WATCHDOG after every session, and a separate clear-faults run would
        latch it again: sessions meant to run clear it themselves, by name."""
        return ("--clear-faults",) if self.v1 and expected == 0 else ()

    def clear(self, name: str, *faults: str) -> Step:
        named = [arg for fault in faults for arg in ("--fault", fault)]
        return self.estim(name, 0, "clear-faults", "--device", self.url, "--operator", OPERATOR, *named)

    def interrupted_run(self, name: str, sig: int, expected: int) -> Step:
        """`estim run` stimulating for 30 s, signalled once it is on."""
        with self._step(name, expected) as step:
            proc = subprocess.Popen(
                [sys.executable, "-m", "firmware_host", *self._run_args(amplitude=1, seconds=30),
                 "--record", str(step.record)],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(), cwd=CHECKOUT)
            assert proc.stdout is not None
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                line = proc.stdout.readline()
                if not line or line.startswith("ch1 on"):
                    break
            proc.send_signal(sig)
            try:
                _, err = proc.communicate(timeout=20)  # drained, so a chatty child never blocks on a full pipe
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
                err = "did not end within 20 s of the signal; " + err
            step.code = proc.returncode
            step.detail = "" if step.ok else err[-600:]
        return step

    def _record_path(self, name: str) -> Path:
        slug = "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")
        return self.workdir / f"{len(self.report.steps) + 1:02d}-{slug}.jsonl"

    # --- sessions through the API (SIM_CONTROL, the console) ------------------------------

    def api_session(self, name: str, body: Callable[[object], None], expected_tripped: bool) -> Step:
        from firmware_host.cli.anchoring import StoreAnchor
        from safety import Envelope, Prescription, TreatmentRecord

        from hil_tests.harness import open_session

        rx = Prescription(max_amplitude_ma=3, ramp_ma_per_s=2, frequency_hz=(2, 50), pulse_width_us=(100, 300),
                          sensitivity="hyposensitive")
        with self._step(name, 3 if expected_tripped else 0) as step, \
                TreatmentRecord(step.record, anchor=StoreAnchor(None)) as record:  # anchored as `estim` anchors
            with open_session(self.url, (1,), rx=rx, record=record, operator=OPERATOR,
                              envelope=Envelope.research(PROTOCOL, PARTICIPANT)) as stim:
                body(stim)
                step.code = 3 if stim.tripped else 0
                step.detail = stim.tripped or ""
        return step

    def console(self, stim: object) -> None:
        """The treatment-room console, headless: raise channel 1 a step, then end the session."""
        from firmware_host.console import ConsoleApp, ConsoleSettings
        from safety import ChannelSetting, Shape

        app = ConsoleApp(stim, [ChannelSetting(1, Shape.BIPHASIC, 20, 200, 0)],  # type: ignore[arg-type]
                         ConsoleSettings(step_ma=0.5), operator=OPERATOR)

        async def drive() -> None:
            async with app.run_test(size=(140, 44)) as pilot:
                await pilot.press("up")
                deadline = asyncio.get_running_loop().time() + 15
                while (stim.setting(1) is None or stim.setting(1).amplitude_ma < 0.5) \
                        and asyncio.get_running_loop().time() < deadline:  # type: ignore[attr-defined]
                    await pilot.pause(0.05)
                await pilot.press("q")
                await pilot.pause(0.5)

        asyncio.run(drive())

    @staticmethod
    def stimulate(stim: object) -> None:
        stim.configure(1, frequency_hz=20, pulse_width_us=200)  # type: ignore[attr-defined]
        stim.enable(1)  # type: ignore[attr-defined]
        stim.ramp(1, 1.0)  # type: ignore[attr-defined]
        time.sleep(0.3)

    # --- the day ------------------------------------------------------------------------

    def run_day(self, sessions: int = 30) -> DayReport:
        started = time.monotonic()
        first = self.estim("first session of the day", 0, "clear-faults", "--device", self.url, "--operator",
                           OPERATOR, "--json", record=False)
        self.v1 = first.ok and self._is_v1()
        self.run("direct, channel 1")
        self.run("direct, channel 2 at 50 Hz", channel=2, frequency=50)
        thresholds = self.workdir / "thresholds.json"
        self.titrate("titration on the preset's waveform", thresholds)
        self.estim("preset dosed from the titration", 0, "run", "--device", self.url, "--preset",
                   "segmental_inhibition", "--channel", "1", "--sites", SITES, "--inserted", "10", "--thresholds",
                   str(thresholds), "--seconds", "3", "--operator", OPERATOR, *DECLARE, *self.v1_clear(0))
        program = self.workdir / "short.toml"
        program.write_text(PROGRAM)
        self.estim("program file", 0, "run", "--device", self.url, "--program", str(program), "--operator", OPERATOR,
                   *DECLARE, *self.v1_clear(0))
        self.api_session("console session", self.console, expected_tripped=False)
        self.interrupted_run("operator STOP (Ctrl-C)", signal.SIGINT, 130)
        self.run("next session refused: the stop is latched", expected=3)
        self.clear("stop cleared by name")
        if self.sim_control:
            from firmware_host import icd

            self.api_session("device raises OVERCURRENT", lambda stim: (
                self.stimulate(stim), stim.sim_control(icd.SimOp.INJECT_FAULT, 1, icd.FaultCode.OVERCURRENT),
                time.sleep(0.3)), expected_tripped=True)
            self.run("next session refused: OVERCURRENT latched", expected=3)
            self.clear("OVERCURRENT cleared by name, after checking", "overcurrent")
            self.api_session("device reboots mid-session", lambda stim: (
                self.stimulate(stim), stim.sim_control(icd.SimOp.REBOOT), time.sleep(0.3)), expected_tripped=True)
        self.interrupted_run("controller killed (SIGKILL)", signal.SIGKILL, -9)
        time.sleep(1.0)  # longer than any watchdog_ms the ICD allows a simulator to default to
        self.run("next session refused: WATCHDOG latched", expected=3)
        self.clear("watchdog cleared by name")
        n = 0
        while self.report.sessions < sessions:
            n += 1
            self.run(f"direct session {n}", channel=1 + n % 2, frequency=(2, 10, 20, 50, 100)[n % 5])
        self.report.seconds = time.monotonic() - started
        self.verify_records()
        return self.report

    def _is_v1(self) -> bool:
        import firmware_host as fh

        link = fh.connect(self.url)
        try:
            return link.protocol_version < 2
        finally:
            link.close()

    def titrate(self, name: str, out: Path) -> Step:
        """`estim titrate` on the preset's waveform, the marks keyed a second apart once it ramps."""
        with self._step(name, 0) as step:
            proc = subprocess.Popen(
                [sys.executable, "-m", "firmware_host", "titrate", "--device", self.url, "--preset",
                 "segmental_inhibition", "--channel", "1", "--sites", SITES, "--inserted", "10", "--ramp", "1",
                 "--out", str(out), "--operator", OPERATOR, "--record", str(step.record), *DECLARE, *self.v1_clear(0)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(),
                cwd=CHECKOUT)
            assert proc.stdin is not None and proc.stderr is not None
            seen = []
            while not seen or not seen[-1].startswith("keys:"):
                line = proc.stderr.readline()
                if not line:
                    break
                seen.append(line)
            for key in "smt":
                time.sleep(1.0)
                proc.stdin.write(key + "\n")
                proc.stdin.flush()
            _, err_text = proc.communicate(timeout=30)
            step.code = proc.returncode
            if not step.ok:
                step.detail = ("".join(seen) + err_text)[-600:]
        return step

    def verify_records(self) -> None:
        """`estim record verify` on every record of the day (in this process: same code, same
        exit codes, without 30 interpreter start-ups)."""
        from contextlib import redirect_stderr, redirect_stdout
        from io import StringIO

        from firmware_host.cli import main as estim

        for step in self.report.steps:
            if step.record is None or not step.record.exists():
                continue
            said = StringIO()
            with redirect_stdout(said), redirect_stderr(said):
                code = estim(["record", "verify", str(step.record)])
            self.report.verified[step.record.name] = code
            if code != expected_verify(step.record.name):
                step.detail += f" record verify: {said.getvalue()[-300:]}"


def expected_verify(record_name: str) -> int:
    """`record verify` exit code a record of the day must give: a killed controller's record is
    intact but not closed (5); every other is intact and closed (0)."""
    return 5 if "killed" in record_name else 0


def main(argv: list[str]) -> int:
    """`python -m hil_tests.clinic_day URL WORKDIR [--no-sim-control]`: print the day."""
    url, workdir = argv[0], Path(argv[1])
    workdir.mkdir(parents=True, exist_ok=True)
    report = Day(url, workdir, "--no-sim-control" not in argv).run_day()
    print(report.summary())
    print(json.dumps({"false_trips": len(report.false_trips), "failures": len(report.failures),
                      "records_not_as_expected": report.bad_records}))
    return 0 if not report.failures and not report.bad_records else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
