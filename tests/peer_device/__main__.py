"""`python -m tests.peer_device`: serve the device until SIGTERM or SIGINT.

The first stdout line is where to connect: a pseudo-terminal path, or socket://HOST:PORT.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import select
import signal
import sys
import time
from types import FrameType
from typing import Any, TextIO

from .device import Device
from .links import Link, open_link
from .options import add_arguments, from_arguments

IDLE_POLL_S = 0.05  # bounds how late a stop signal is noticed


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.peer_device",
        description="An independent stimulator device implementing ICD.md (v2, v1 compatible).",
        epilog="The first stdout line is where to connect: a pty path or socket://HOST:PORT. "
        "The device keeps its state across host sessions until SIGTERM or SIGINT.",
    )
    parser.add_argument("--listen", default="pty", help="'pty' or 'tcp:HOST:PORT' (default: pty)")
    parser.add_argument("--trace", help="append JSON lines for output-off events, faults and reboots; "
                        "`t` is CLOCK_MONOTONIC seconds (time.monotonic)")  # fmt: skip
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        args.options = from_arguments(args)
    except ValueError as error:
        parser.error(str(error))
    return args


def serve(device: Device, link: Link, stopping: list[bool]) -> None:
    """Feed the device what arrives and its own clock's deadlines; write what it sends."""
    while not stopping:
        deadline = device.next_deadline()
        wait = IDLE_POLL_S if deadline is None else min(IDLE_POLL_S, max(0.0, deadline - time.monotonic()))
        readable, _, _ = select.select(link.fds(), [], [], wait)
        data = b"".join(link.read(fd) for fd in readable)
        out = device.step(time.monotonic(), data)
        if out:
            link.write(out)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    stopping: list[bool] = []

    def stop(signum: int, frame: FrameType | None) -> None:
        stopping.append(True)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        link = open_link(args.listen)
    except ValueError as error:
        print(error, file=sys.stderr)
        return 2
    with contextlib.ExitStack() as stack:
        stack.callback(link.close)
        trace: TextIO | None = stack.enter_context(open(args.trace, "a", buffering=1)) if args.trace else None

        def record(event: dict[str, Any]) -> None:
            if trace is not None:
                trace.write(json.dumps(event) + "\n")

        print(link.url, flush=True)
        serve(Device(args.options, time.monotonic(), record), link, stopping)
    return 0


if __name__ == "__main__":
    sys.exit(main())
