"""Every command in docs/clinician.md, run in order as written, on the simulated device: the
walkthrough a clinician follows must work. Two things a script cannot do as a person does are
supplied: the titration keys (pressed as the current passes set levels) and a short session
length for the treatment commands (`--minutes 0.05`, appended)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from firmware_host.sim.process import child_env
from support import REPO, titrate_with_keys

pytestmark = pytest.mark.timeout(150)

DOC = REPO / "docs" / "clinician.md"
KEY_LEVELS_UA = (("s", 500), ("m", 1100), ("t", 1700))


def doc_commands() -> list[list[str]]:
    blocks = re.findall(r"```sh\n(.*?)```", DOC.read_text(), re.S)
    return [shlex.split(line) for block in blocks for line in block.splitlines() if line.startswith("estim ")]


def test_the_walkthrough_covers_a_whole_visit() -> None:
    names = [" ".join(c[1:3]) for c in doc_commands()]
    for step in ("patient add", "visit start", "visit outcome", "visit end", "patient show", "patient trend",
                 "presets show"):
        assert step in names, step
    assert any(c[1] == "titrate" and "--preset" in c for c in doc_commands())
    assert any(c[1] == "run" and "--last-dose" in c for c in doc_commands())


def test_every_command_in_the_clinician_doc_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ESTIM_STORE_URL", raising=False)
    (tmp_path / "programs").symlink_to(REPO / "programs")
    for n, command in enumerate(doc_commands()):
        argv = [sys.executable, "-m", "firmware_host", *command[1:]]
        if command[1] == "titrate":
            done = titrate_with_keys([*argv, "--ramp", "2"], tmp_path / f"titration-{n}.jsonl", KEY_LEVELS_UA,
                                     cwd=tmp_path)
        else:
            if command[1] == "run":
                argv += ["--minutes", "0.05"]
            done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, env=child_env(), timeout=60,
                                  stdin=subprocess.DEVNULL)
        assert done.returncode == 0, f"{shlex.join(command)}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        assert "Traceback" not in done.stderr
    assert (tmp_path / "P001-trend.png").read_bytes()[:4] == b"\x89PNG"
