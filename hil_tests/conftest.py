"""The HIL acceptance suite's options, markers, device fixture and test record.

`pytest hil_tests` starts the simulator as its own process on a pseudo-terminal;
`pytest hil_tests --device /dev/ttyACM0` runs the same tests against hardware, and
`pytest hil_tests --lg-env rig.yaml` against the stimulator of a labgrid place
(`needle-estim[lab]`, whose pytest plugin gives `--lg-env`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from firmware_host import errors, icd
from firmware_host.drivers import open_transport
from firmware_host.link import Link
from firmware_host.sim.process import SimProcess, Trace, spawn_sim
from firmware_host.stimulator import Stimulator

if TYPE_CHECKING:
    from firmware_host.lab import PlacePort
from hil_tests.harness import ask, observed, open_session
from hil_tests.record import HilRecord, Measurement, TestEntry, limits_text, utc_now, utc_stamp
from hil_tests.report import write_report

RECORD_KEY = pytest.StashKey[HilRecord]()
SIM_SERIAL_PREFIX = "SIM-"

Measure = Callable[..., Measurement]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("hil", "hardware-in-the-loop acceptance")
    group.addoption("--device", default=None, metavar="URL",
                    help="device under test (serial path or pyserial URL); default: start the simulator on a pty")
    group.addoption("--manual", action="store_true", help="run tests that need a person at the device")
    group.addoption("--hil-record", default="hil-results", metavar="DIR",
                    help="where the JSON test record, its Markdown report and the device trace go")
    group.addoption("--strict-timing", action="store_true",
                    help="enforce latency limits (otherwise latencies are recorded as informational)")


@pytest.hookimpl(tryfirst=True)  # before pytest's junitxml plugin reads --junitxml
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "needs_sim_control: fault injection via SIM_CONTROL (simulator only)")
    config.addinivalue_line("markers", "manual: needs a person at the device; runs only with --manual")
    config.addinivalue_line("markers", "slow: many trials or long holds")
    lab = bool(config.getoption("lg_env", default=None) or os.environ.get("LG_ENV"))  # labgrid's, made after this
    if config.getoption("--device") and lab:
        raise pytest.UsageError("give either --device URL or --lg-env FILE (the device of a labgrid place), not both")
    directory = Path(config.getoption("--hil-record"))
    stamp = utc_stamp()
    if not config.option.xmlpath:  # every run leaves JUnit XML beside its record, for the lab's dashboard
        config.option.xmlpath = str(directory / f"hil-junit-{stamp}.xml")
    config.stash[RECORD_KEY] = HilRecord(
        directory / f"hil-record-{stamp}.json",
        config.getoption("--device") or ("labgrid place" if lab else "simulator (pty)"),
        {"manual": config.getoption("--manual"), "strict_timing": config.getoption("--strict-timing")},
    )


def _lab_environment(config: pytest.Config) -> object | None:
    """labgrid's environment when its plugin is installed and `--lg-env` (or LG_ENV) was given
    (made by labgrid's own pytest_configure, which runs after this plugin's)."""
    try:
        from labgrid.pytestplugin.hooks import LABGRID_ENV_KEY
    except ImportError:
        return None
    return config.stash.get(LABGRID_ENV_KEY, None)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--manual"):
        return
    skip = pytest.mark.skip(reason="needs a person at the device: run with --manual")
    for item in items:
        if "manual" in item.keywords:
            item.add_marker(skip)


# --- the test record ---------------------------------------------------------------------

_ENTRY = pytest.StashKey[TestEntry]()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    record = item.config.stash[RECORD_KEY]
    item.stash[_ENTRY] = record.begin(item.nodeid)
    record.save()  # a run that dies mid-test leaves a record naming the test that was running


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item) -> Iterator[None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    entry = item.stash.get(_ENTRY, None)
    if entry is None:
        return
    failed_measurements = [m.describe() for m in entry.measurements if m.outcome == "FAIL"]
    if report.when == "call" and report.passed and failed_measurements:
        # as in OpenHTF, a phase records all its measurements, then fails on any outside its limits
        report.outcome = "failed"
        report.longrepr = "measurements outside their limits: " + "; ".join(failed_measurements)
    if report.skipped:
        entry.outcome = "skipped"
        longrepr = report.longrepr
        entry.detail = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    elif report.failed:
        if entry.outcome != "failed":
            entry.outcome = "failed" if report.when == "call" else "error"
        entry.detail = "\n".join(filter(None, [entry.detail, report.longreprtext]))  # a failed call, then its teardown
    elif report.when == "call":
        entry.outcome = "passed"
    if report.when == "call":
        entry.duration_s = round(report.duration, 3)
    if report.when == "teardown":
        entry.finished = utc_now()
        item.config.stash[RECORD_KEY].save()


def pytest_sessionfinish(session: pytest.Session) -> None:
    record = session.config.stash.get(RECORD_KEY, None)
    if record is None or not record.tests:
        return
    record.finished = utc_now()
    record.save()
    write_report(record.path)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    record = config.stash.get(RECORD_KEY, None)
    if record is not None and record.tests:
        terminalreporter.write_line(f"HIL record: {record.path}  report: {record.path.with_suffix('.md')}  "
                                    f"JUnit XML: {config.option.xmlpath}")


@pytest.fixture
def measure(request: pytest.FixtureRequest) -> Measure:
    """`measure(name, value, unit, low=None, high=None, timing=False)`: record a measurement
    in the test record (and JUnit properties); a value outside its limits fails the test
    once it has finished (the test's other measurements are still taken).

    `timing=True` marks a latency that depends on this machine as much as the device: its
    limit is enforced only with --strict-timing, otherwise recorded as informational.
    """
    entry = request.node.stash[_ENTRY]
    strict = request.config.getoption("--strict-timing")

    def record(name: str, value: float, unit: str, low: float | None = None, high: float | None = None,
               timing: bool = False) -> Measurement:
        note = ""
        if timing and not strict and (low is not None or high is not None):
            note = f"waived without --strict-timing: {limits_text(Measurement(name, 0.0, unit, low, high))} {unit}"
            low = high = None
        m = Measurement(name, float(value), unit, low, high, note)
        entry.measurements.append(m)
        request.node.user_properties.append((name, f"{m.value:g} {unit} {m.outcome}"))
        return m

    return record


# --- the device under test ---------------------------------------------------------------

@dataclass
class DeviceUnderTest:
    url: str
    identity: icd.Identity
    sim_control: bool
    sim: SimProcess | None
    place: PlacePort | None = None  # the labgrid place it was reached through, with its tags

    def trace(self) -> Trace | None:
        """The device-side event trace (only the simulator has one), marked at now."""
        if self.sim is None:
            return None
        trace = Trace(self.sim.trace_path)
        trace.mark()
        return trace


def _probe_sim_control(link: Link) -> bool:
    """SET_LOAD on a channel that does not exist: the simulator NAKs OUT_OF_RANGE (and
    changes nothing), a real device NAKs UNSUPPORTED."""
    try:
        ask(link, icd.SimControl(icd.SimOp.SET_LOAD, 0xFF, 0))
    except errors.Unsupported:
        return False
    except errors.OutOfRange:
        return True
    return True


def _lab_port(request: pytest.FixtureRequest, url: str | None) -> PlacePort | None:
    """The port of the labgrid place the device is reached through: `--lg-env` (labgrid's
    `target` fixture, which refuses a place this user has not acquired) or `--device lg://PLACE`;
    resolved once, so the place's tags and port go into the record."""
    if url is None and _lab_environment(request.config) is not None:
        from firmware_host.lab import port_of

        return port_of(request.getfixturevalue("target"))
    if url is not None and url.startswith("lg://"):
        from firmware_host.lab import place_port

        return place_port(url)
    return None


@pytest.fixture(scope="session")
def dut(request: pytest.FixtureRequest, record_testsuite_property: Callable[[str, object], None]
        ) -> Iterator[DeviceUnderTest]:
    record = request.config.stash[RECORD_KEY]
    url = request.config.getoption("--device")
    place = _lab_port(request, url)
    sim = None
    if place is not None:
        url = place.url
        record.rig = place.as_dict()
    elif url is None:
        record.path.parent.mkdir(parents=True, exist_ok=True)
        sim = spawn_sim("pty", trace_path=record.path.with_name(record.path.stem + "-device-trace.jsonl"))
        url = sim.url
    try:
        link = Link(open_transport(url))
        identity = link.open(2.0)
        try:
            sim_control = _probe_sim_control(link)
        finally:
            link.close()
        record.device.update({"url": url,
            "serial": identity.serial, "firmware": f"{identity.fw_major}.{identity.fw_minor}",
            "protocol_version": identity.protocol_version, "channels": identity.channels,
            "simulated": sim is not None or identity.serial.startswith(SIM_SERIAL_PREFIX),
            "sim_control": sim_control, "watchdog_ms": identity.watchdog_ms, "telemetry_hz": identity.telemetry_hz,
        })
        for name, value in record.summary().items():  # the run's identity, for JUnit dashboards too
            record_testsuite_property(name, value)
        yield DeviceUnderTest(url, identity, sim_control, sim, place)
    finally:
        if sim is not None:
            sim.stop()


@pytest.fixture(autouse=True)
def _sim_control_gate(request: pytest.FixtureRequest) -> None:
    """Skip SIM_CONTROL tests on a device that NAKs it (real hardware)."""
    if request.node.get_closest_marker("needs_sim_control") is None:
        return
    device: DeviceUnderTest = request.getfixturevalue("dut")
    if not device.sim_control:
        pytest.skip(f"needs SIM_CONTROL fault injection; {device.identity.serial} NAKs it UNSUPPORTED (real hardware)")


@pytest.fixture
def stim(dut: DeviceUnderTest) -> Iterator[Stimulator]:
    """A product session on the device, started clean and left safe. A link lost during the
    test (a cable, a network, a rig host gone) fails it saying so; a device that restarts is
    what some tests provoke."""
    session = open_session(dut.url)
    with observed(session) as seen:
        try:
            yield session
        finally:
            session.close()  # delivers every event still queued
    lost = [event.reason for event in seen.lost if not isinstance(event.reason, errors.DeviceRebooted)]
    if lost:
        pytest.fail(f"the link to the device was lost during the test: {lost[0]}", pytrace=False)


@pytest.fixture
def link(dut: DeviceUnderTest) -> Iterator[Link]:
    """A bare link (no interlock): for tests that play a faulty host."""
    bare = Link(open_transport(dut.url))
    bare.open(2.0)
    try:
        ask(bare, icd.ClearFault())  # start clean whatever an earlier test latched
        yield bare
    finally:
        bare.close()
