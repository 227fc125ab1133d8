"""Fixtures shared by the test suite (helpers live in support.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware_host.sim.process import SimProcess, spawn_sim


@pytest.fixture(params=["pty", "tcp"])
def sim_process(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SimProcess]:
    """The simulator as its own process, over a pseudo-terminal and over TCP loopback."""
    listen = "pty" if request.param == "pty" else "tcp:127.0.0.1:0"
    with spawn_sim(listen, trace_path=tmp_path / "device-trace.jsonl") as sim:
        yield sim
