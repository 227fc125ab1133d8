"""Decisions recorded once the interlock has let go of its lock.

The interlock records every decision in the treatment record, but a slow disk under the
record must never hold up supervision waiting for the interlock's lock: each decorated call
collects its entries on a thread-local journal and writes them after returning from under
the lock. What it approved is handed out only once recorded; a record that cannot be
written trips the session (voiding every approval) and the call is refused.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

from .errors import InterlockStateError


def journaled(method: Callable[..., Any]) -> Callable[..., Any]:
    """For `Interlock` methods: `self._journal` is a threading.local, `self._write_journal()`
    writes what it holds (False when the record failed), `self._tripped` the stop's reason."""

    @functools.wraps(method)
    def journaled_call(self: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(self._journal, "entries", None) is not None:
            return method(self, *args, **kwargs)  # inside an outer journaled call: it writes
        self._journal.entries = []
        try:
            result = method(self, *args, **kwargs)
        except BaseException:
            self._write_journal()
            raise
        if not self._write_journal():
            raise InterlockStateError(f"not approved: {self._tripped}")
        return result

    return journaled_call
