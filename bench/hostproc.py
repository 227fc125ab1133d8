"""A host process for the watchdog benchmark, killed with SIGKILL by its parent.

`python -m bench.hostproc URL STAMP_PATH`: waits for "go" on stdin, opens the link, leaves
channel 0 enabled at 0 µA, prints "ready WATCHDOG_MS" and keeps the session alive with the
link's heartbeats. After every frame it writes, it stores time.monotonic() (8 bytes,
little-endian double) at the start of STAMP_PATH, so the parent knows when the device
last heard from it.
"""

from __future__ import annotations

import os
import struct
import sys
import threading
import time

from firmware_host.drivers import open_transport
from firmware_host.link import Link

from .harness import arm

STAMP = struct.Struct("<d")  # the stamp file's layout


def main(argv: list[str]) -> int:
    url, stamp_path = argv
    sys.stdin.readline()
    fd = os.open(stamp_path, os.O_WRONLY | os.O_CREAT, 0o600)
    transport = open_transport(url)
    write = transport.write

    def stamped_write(data: bytes) -> None:
        write(data)
        os.pwrite(fd, STAMP.pack(time.monotonic()), 0)

    transport.write = stamped_write  # type: ignore[method-assign]
    link = Link(transport)
    identity = link.open()
    arm(link, channel=0)
    print("ready", identity.watchdog_ms, flush=True)
    threading.Event().wait()  # until SIGKILL
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
