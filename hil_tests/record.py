"""The test record: one JSON document per run, OpenHTF-style, with every measurement, its
limits, unit and outcome, the identity of the device and host it was taken on, the lab rig
(labgrid place and its tags) it was reached through, and when the run and each test began
and ended. The same identity goes into the run's JUnit XML as test-suite properties.

Rewritten atomically (temporary file + os.replace) after every test, so a run that dies
half-way still leaves a readable record of what it measured.
"""

from __future__ import annotations

import json
import math
import os
import platform
import socket
import sys
import threading
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from firmware_host import icd

SCHEMA = "needle-estim/hil-record/2"  # 2: `rig`, and the host's ICD versions


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat()


def utc_stamp() -> str:
    """The run's name in file names: UTC to the second."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


@dataclass
class Measurement:
    """One measured value against its limits; no limits means informational (always PASS)."""

    name: str
    value: float
    unit: str
    low: float | None = None
    high: float | None = None
    note: str = ""
    outcome: str = field(init=False)

    def __post_init__(self) -> None:
        within = math.isfinite(self.value) and (self.low is None or self.value >= self.low) and (
            self.high is None or self.value <= self.high)
        self.outcome = "PASS" if within else "FAIL"

    def describe(self) -> str:
        return f"{self.name} = {self.value:g} {self.unit} (limits {limits_text(self)}): {self.outcome}"


def limits_text(m: Measurement) -> str:
    if m.low is None and m.high is None:
        return "none"
    low = "" if m.low is None else f"{m.low:g} <= "
    high = "" if m.high is None else f" <= {m.high:g}"
    return f"{low}x{high}"


@dataclass
class TestEntry:
    nodeid: str
    started: str
    finished: str = ""
    outcome: str = "running"
    duration_s: float = 0.0
    detail: str = ""
    measurements: list[Measurement] = field(default_factory=list)


def host_info() -> dict[str, str]:
    try:
        version = metadata.version("needle-estim")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return {"host_version": version, "icd_versions": sorted(icd.PROTOCOL_VERSIONS), "python": sys.version.split()[0],
            "platform": platform.platform(), "hostname": socket.gethostname()}


class HilRecord:
    """Accumulates tests and measurements; `save` writes the whole record atomically."""

    def __init__(self, path: Path, device_url: str, options: dict[str, Any]) -> None:
        self.path = path
        self.started = utc_now()
        self.finished = ""
        self.device: dict[str, Any] = {"url": device_url}
        self.host = host_info()
        self.rig: dict[str, Any] | None = None  # the labgrid place: name, tags, port
        self.options = options
        self.tests: list[TestEntry] = []
        self._lock = threading.Lock()

    def begin(self, nodeid: str) -> TestEntry:
        entry = TestEntry(nodeid, utc_now())
        with self._lock:
            self.tests.append(entry)
        return entry

    def to_json(self) -> dict[str, Any]:
        with self._lock:
            tests = [asdict(t) for t in self.tests]
        measurements = [m for t in tests for m in t["measurements"]]
        failed = [t for t in tests if t["outcome"] in ("failed", "error")]
        return {
            "schema": SCHEMA,
            "started": self.started,
            "finished": self.finished,
            "outcome": "FAIL" if failed or any(m["outcome"] == "FAIL" for m in measurements) else "PASS",
            "device": self.device,
            "host": self.host,
            "rig": self.rig,
            "options": self.options,
            "tests": tests,
        }

    def summary(self) -> dict[str, str]:
        """Who was tested where, as flat strings (the JUnit XML's test-suite properties)."""
        device, rig = self.device, self.rig or {}
        return {
            "device_serial": str(device.get("serial", "")), "device_firmware": str(device.get("firmware", "")),
            "icd_version": str(device.get("protocol_version", "")), "device_url": str(device.get("url", "")),
            "host_version": self.host["host_version"], "place": str(rig.get("place") or ""),
            "place_tags": ",".join(f"{k}={v}" for k, v in sorted((rig.get("tags") or {}).items())),
            "started": self.started, "record": str(self.path),
        }

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, self.path)
