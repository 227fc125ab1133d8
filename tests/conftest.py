"""Fixtures shared by the test suite (helpers live in support.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware_host.sim.process import SimProcess, spawn_sim


@pytest.fixture(autouse=True)
def _user_dirs(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test (and every `estim` it starts) gets its own config, data and state directories:
    record keys, the visit store, default record paths and estim.log never touch the real user's."""
    home = tmp_path_factory.mktemp("user")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "data"))
    monkeypatch.setenv("XDG_STATE_HOME", str(home / "state"))


@pytest.fixture(params=["pty", "tcp"])
def sim_process(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SimProcess]:
    """The simulator as its own process, over a pseudo-terminal and over TCP loopback."""
    listen = "pty" if request.param == "pty" else "tcp:127.0.0.1:0"
    with spawn_sim(listen, trace_path=tmp_path / "device-trace.jsonl") as sim:
        yield sim


@pytest.fixture(scope="session")
def postgres_url_template() -> Iterator[str]:
    """One PostgreSQL server for the whole test session (started on first use)."""
    from postgres_server import postgres_server

    with postgres_server() as template:
        yield template


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty visit store, on SQLite and on a real PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'visits.sqlite3'}"
    from postgres_server import new_database

    return new_database(request.getfixturevalue("postgres_url_template"))
