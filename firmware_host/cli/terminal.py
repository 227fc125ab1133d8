"""The clinician's terminal, the same in every session command: the treatment room's keys (the
console binds the same ones in Textual), the wait for Enter before current starts, and the bell
at the end and at every stop.

Keys are read one at a time (cbreak: Ctrl-C still interrupts) on a terminal; from a pipe
(scripts, tests) characters as they arrive, line ends skipped. Arrow keys arrive as escape
sequences; a lone Esc is a STOP, told apart from an arrow by waiting `ESC_WAIT_S` for the rest.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import sys
from collections.abc import Callable, Iterator

STOP, LOWER, RAISE, PAUSE, END, ENTER, LEFT, RIGHT = "stop", "lower", "raise", "pause", "end", "enter", "left", "right"
ENDED = ""
"""What `read_key` returns when input has ended (a pipe closed)."""

LEGEND = "space or Esc = STOP, ↓ or - = lower, ↑ or + = raise, p = pause / resume, q = end (ramps down)"
"""The room's keys in one line, as every session command prints them."""

ESC_WAIT_S = 0.03
_NAMED = {" ": STOP, "\x1b": STOP, "-": LOWER, "+": RAISE, "=": RAISE, "p": PAUSE, "q": END, "\r": ENTER,
          "\n": ENTER}
_ARROWS = {"A": RAISE, "B": LOWER, "C": RIGHT, "D": LEFT}

ReadKey = Callable[[float | None], str | None]


def parse(text: str) -> tuple[list[str], str]:
    """The keys in `text` (names for the room's keys, the character for any other) and what is
    left over: an escape sequence that may not be complete yet."""
    keys: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c != "\x1b":
            keys.append(_NAMED.get(c, c))
            i += 1
            continue
        if i + 1 == len(text):
            return keys, text[i:]
        if text[i + 1] not in "[O":
            keys.append(STOP)  # Esc, then another key
            i += 1
            continue
        j = i + 2  # CSI / SS3: parameters, then one final byte in @..~
        while j < len(text) and not "@" <= text[j] <= "~":
            j += 1
        if j == len(text):
            return keys, text[i:]
        if text[j] in _ARROWS:
            keys.append(_ARROWS[text[j]])
        i = j + 1  # any other sequence (a function key) is no key of ours
    return keys, ""


@contextlib.contextmanager
def keys(stream: object | None = None) -> Iterator[ReadKey]:
    """A `read_key(timeout) -> str | None`: the next key (see `parse`), None when none came in
    `timeout` seconds (None: wait), ENDED when input ended."""
    fd = (stream or sys.stdin).fileno()  # type: ignore[attr-defined]
    tty_mode = os.isatty(fd)
    pending: list[str] = []
    partial = [""]

    def more(timeout: float | None) -> str | None:
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            return None
        try:
            return os.read(fd, 64).decode(errors="replace")
        except OSError:  # the terminal went away
            return ENDED

    def read_key(timeout: float | None) -> str | None:
        while not pending:
            chunk = more(ESC_WAIT_S if partial[0] else timeout)
            if chunk is None and partial[0]:  # nothing followed the Esc: the Esc key itself
                partial[0] = ""
                pending.append(STOP)
                continue
            if chunk is None:
                return None
            if chunk == ENDED:
                return STOP if partial[0] else ENDED
            found, partial[0] = parse(partial[0] + (chunk if tty_mode else re.sub("[\r\n]", "", chunk)))
            pending.extend(found)
        return pending.pop(0)

    if not tty_mode:
        yield read_key
        return
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)
    try:
        yield read_key
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def on_terminal() -> bool:
    """Keys can be read from a person at a terminal: not a script's pipe, and not a job in the
    background of one (reading or setting its terminal would stop it, session and all)."""
    try:
        fd = sys.stdin.fileno()
        return os.isatty(fd) and os.tcgetpgrp(fd) == os.getpgrp()
    except (AttributeError, OSError, ValueError):
        return False


def in_background() -> bool:
    """Started with `&` from a terminal: its keys belong to the shell, not to this command."""
    try:
        return os.isatty(sys.stdin.fileno()) and not on_terminal()
    except (AttributeError, OSError, ValueError):
        return False


def confirm(read_key: ReadKey, what: str = "start") -> bool:
    """Wait for Enter (True); q, Esc, space or Ctrl-C leave (False). Nothing has been sent yet,
    so leaving needs no stop."""
    print(f"press Enter to {what}, or q to leave (nothing has been sent yet)", file=sys.stderr, flush=True)
    try:
        while True:
            key = read_key(None)
            if key == ENTER:
                return True
            if key in (END, STOP, ENDED):
                return False
    except KeyboardInterrupt:
        return False


def bell(text: str, file: object = None) -> None:
    """Say `text` (on stderr, or `file`) and ring the terminal's bell when it is a terminal: at
    the end of a session and at every stop, so nobody has to watch the screen for it."""
    stream = file or sys.stderr
    ring = "\a" if _is_terminal(stream) else ""
    print(f"{ring}{text}", file=stream, flush=True)


def _is_terminal(stream: object) -> bool:
    try:
        return stream.isatty()  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return False
