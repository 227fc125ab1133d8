"""A labgrid lab on this machine, all real processes: `labgrid-coordinator` on loopback,
`labgrid-exporter`s publishing devices' pseudo-terminals through ser2net (RFC 2217), places
with tags, and clients told apart by user name (LG_USERNAME), as CI machines would be."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from firmware_host.sim.process import child_env
from hil_tests.ser2net import ser2net_binary

from support import DIRECT_SESSION, REPO, estim_on

TOOLS = ("labgrid-coordinator", "labgrid-exporter", "labgrid-client")
RIG_ENV = REPO / "hil_tests" / "rig.yaml"
START_TIMEOUT_S = 20.0


def tool(name: str) -> str | None:
    """A labgrid command: beside this Python (the venv's), else on PATH."""
    beside = Path(sys.executable).with_name(name)
    return str(beside) if beside.exists() else shutil.which(name)


def unavailable() -> str | None:
    """Why the lab cannot run on this machine (what the tests skip with), or None."""
    try:
        import labgrid  # noqa: F401
    except ImportError:
        return "labgrid is not installed: pip install 'needle-estim[lab]'"
    if ser2net_binary() is None:
        return "ser2net is not installed (Debian: apt-get install ser2net)"
    missing = [name for name in TOOLS if tool(name) is None]
    return f"labgrid's {', '.join(missing)} not found" if missing else None


class Lab:
    """A coordinator, exporters and places; `close()` ends every process it started."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.address = f"127.0.0.1:{probe.getsockname()[1]}"
        self._processes: list[subprocess.Popen[bytes]] = []
        self._start("coordinator", [tool("labgrid-coordinator"), "-l", self.address])  # state files in workdir
        self.admin = self.client("lab-admin")
        self._until(lambda: self.admin.lg("places", check=False).returncode == 0, "the coordinator to answer")

    def client(self, user: str) -> Client:
        return Client(self, user)

    def export(self, name: str, ports: dict[str, str]) -> subprocess.Popen[bytes]:
        """An exporter `name` publishing each pty as group/NetworkSerialPort (ser2net starts once
        a place holding it is acquired); returns once the coordinator lists them."""
        config = self.workdir / f"exporter-{name}.yaml"
        config.write_text("".join(f"{group}:\n  RawSerialPort:\n    port: {path}\n    speed: 115200\n"
                                  for group, path in ports.items()))
        proc = self._start(f"exporter-{name}", [tool("labgrid-exporter"), "-c", self.address,
                                                "--hostname", "127.0.0.1", "-n", name, str(config)])
        wanted = {f"{name}/{group}/NetworkSerialPort" for group in ports}
        self._until(lambda: wanted <= set(self.admin.lg("resources").stdout.split()), f"exporter {name}'s resources")
        return proc

    def add_place(self, name: str, resource: str, tags: dict[str, str]) -> None:
        self.admin.lg("-p", name, "create")
        self.admin.lg("-p", name, "add-match", resource)
        if tags:
            self.admin.lg("-p", name, "set-tags", *(f"{k}={v}" for k, v in tags.items()))

    def close(self) -> None:
        for proc in reversed(self._processes):
            kill_group(proc, signal.SIGTERM)
        for proc in self._processes:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                kill_group(proc, signal.SIGKILL)
                proc.wait()

    def _start(self, name: str, argv: list[str | None]) -> subprocess.Popen[bytes]:
        with open(self.workdir / f"{name}.log", "ab") as log:
            proc = subprocess.Popen([str(a) for a in argv], cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT,
                                    env=child_env(), start_new_session=True)  # its own group: an exporter dies with its ser2net
        self._processes.append(proc)
        return proc

    def _until(self, condition: object, what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not condition():  # type: ignore[operator]
            if time.monotonic() > deadline:
                logs = {p.name: p.read_text()[-800:] for p in self.workdir.glob("*.log")}
                raise RuntimeError(f"timed out waiting for {what}: {logs}")
            time.sleep(0.2)


class Client:
    """A lab user on this machine: labgrid-client, `estim` and the HIL suite under its name."""

    def __init__(self, lab: Lab, user: str, token: str | None = None) -> None:
        self.lab = lab
        self.user = user
        self.env = {**child_env(), "LG_COORDINATOR": lab.address, "LG_USERNAME": user}
        if token is not None:
            self.env["LG_TOKEN"] = token

    def holding(self, token: str) -> Client:
        """The same user, holding the reservation `token` (place `+`)."""
        return Client(self.lab, self.user, token)

    def lg(self, *args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([str(tool("labgrid-client")), *args], capture_output=True, text=True, env=self.env,
                              timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"labgrid-client {' '.join(args)} as {self.user}: {done.stderr}")
        return done

    def reserve(self, *tags: str) -> subprocess.Popen[str]:
        """`labgrid-client reserve --wait --shell TAGS`: prints `export LG_TOKEN=...` once allocated."""
        return subprocess.Popen([str(tool("labgrid-client")), "reserve", "--wait", "--shell", *tags],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=self.env)

    def estim(self, device: str, *args: str) -> subprocess.Popen[str]:
        """`estim run` of a short direct session on `device`."""
        return subprocess.Popen(estim_on(device, "run", *DIRECT_SESSION, *args), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=self.env, cwd=REPO)

    def hil(self, place: str, record: Path, *args: str) -> subprocess.Popen[str]:
        """The acceptance suite on the place's stimulator (`--lg-env hil_tests/rig.yaml`)."""
        return subprocess.Popen(
            [sys.executable, "-m", "pytest", "hil_tests", "-q", "-p", "no:cacheprovider", "--lg-env", str(RIG_ENV),
             "--hil-record", str(record), *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**self.env, "LG_PLACE": place}, cwd=REPO)


def token_of(reservation: subprocess.Popen[str], timeout: float = 30) -> str:
    out, err = reservation.communicate(timeout=timeout)
    for line in out.splitlines():
        if line.startswith("export LG_TOKEN="):
            return line.removeprefix("export LG_TOKEN=").strip()
    raise AssertionError(f"no reservation token (exit {reservation.returncode}): {out} {err}")


def kill_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
