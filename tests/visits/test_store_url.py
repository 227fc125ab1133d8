"""The visit commands on a clinic's PostgreSQL server by one URL setting (`--store URL` or
ESTIM_STORE_URL). The whole visit is run by tests/test_clinician_doc.py on the default
SQLite store; the store itself is tested on both in test_store.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from firmware_host.sim.process import child_env
from firmware_host.visits import VisitStore

pytestmark = pytest.mark.timeout(60)


def estim(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "firmware_host", *args], capture_output=True, text=True,
                          env=child_env(), timeout=50, stdin=subprocess.DEVNULL)


def test_the_same_commands_on_postgresql_by_one_url(postgres_url_template: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from postgres_server import new_database

    url = new_database(postgres_url_template)
    assert estim("patient", "add", "P9", "--store", url).returncode == 0
    monkeypatch.setenv("ESTIM_STORE_URL", url)
    assert estim("visit", "start", "P9", "--no", "all").returncode == 0
    shown = estim("patient", "show", "P9")
    assert shown.returncode == 0 and "nothing raised" in shown.stdout and "[open]" in shown.stdout
    assert not (Path(os.environ["XDG_DATA_HOME"]) / "estim" / "visits.sqlite3").exists()   # nothing went to SQLite
    with VisitStore(url) as store:
        assert len(store.open_visits("P9")) == 1
