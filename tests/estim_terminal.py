"""An `estim` command on a pseudo-terminal, as a clinician runs it: what it prints is read as
it comes, and answers and keys are typed into it."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time

from firmware_host.sim.process import child_env


class Terminal:
    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self._fd, follower = pty.openpty()
        self.proc = subprocess.Popen([sys.executable, "-m", "firmware_host", *args], stdin=follower, stdout=follower,
                                     stderr=follower, env={**child_env(), "TERM": "xterm-256color", **(env or {})},
                                     start_new_session=True)
        os.close(follower)
        self.output = b""

    def __enter__(self) -> Terminal:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        os.close(self._fd)

    def _read(self, wait_s: float) -> bool:
        """Whatever the command printed within `wait_s`; False once it closed the terminal."""
        if select.select([self._fd], [], [], wait_s)[0]:
            try:
                chunk = os.read(self._fd, 65536)
            except OSError:                      # the command exited and its side of the terminal is gone
                return False
            self.output += chunk
            return bool(chunk)
        return True

    @property
    def text(self) -> str:
        return self.output.decode("utf-8", "replace").replace("\r\n", "\n")

    def expect(self, text: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.text:
            if time.monotonic() > deadline or not self._read(0.1):
                raise AssertionError(f"{text!r} never shown; the terminal shows:\n{self.text[-2000:]}")

    def type(self, keys: str) -> None:
        os.write(self._fd, keys.encode())

    def finish(self, timeout: float = 30.0) -> int:
        """The command's exit code, once it ends (everything it printed is read)."""
        deadline = time.monotonic() + timeout
        while self._read(0.1) and time.monotonic() < deadline:
            if self.proc.poll() is not None and not select.select([self._fd], [], [], 0)[0]:
                break
        return self.proc.wait(max(0.1, deadline - time.monotonic()))
