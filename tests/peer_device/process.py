"""Start the device as its own process from tests: `with spawn_peer("pty") as peer: peer.url`."""

from __future__ import annotations

import os
import select
import subprocess
import sys
from pathlib import Path
from types import TracebackType
from typing import Any

REPO = Path(__file__).resolve().parents[2]


class PeerProcess:
    """A running device process; `url` is a pty path or socket://HOST:PORT."""

    def __init__(self, proc: subprocess.Popen[bytes], url: str) -> None:
        self.proc = proc
        self.url = url

    def stop(self, timeout: float = 5.0) -> int:
        """SIGTERM, then SIGKILL if it does not exit in time; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode

    def __enter__(self) -> PeerProcess:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def spawn_peer(
    listen: str = "pty", trace: str | os.PathLike[str] | None = None, timeout: float = 10.0, **options: Any
) -> PeerProcess:
    """Start `python -m tests.peer_device`; options are DeviceOptions fields (`channels=4`, ...)."""
    argv = [sys.executable, "-m", "tests.peer_device", "--listen", listen]
    if trace is not None:
        argv += ["--trace", os.fspath(trace)]
    for name, value in options.items():
        argv += ["--" + name.replace("_", "-"), str(value)]
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline().decode().strip() if ready else ""
    if not line:
        PeerProcess(proc, "").stop()
        raise RuntimeError(f"peer device did not start within {timeout} s (exit code {proc.returncode})")
    return PeerProcess(proc, line)
