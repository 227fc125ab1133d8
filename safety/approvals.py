"""Commands and the approvals that carry them to the wire.

An `Approved` exists only because an `Interlock` minted it: a private mint token guards
the constructor, an HMAC over every field (keyed per process) detects tampering, and it is
single-use and short-lived. It also names the interlock that minted it, and the link of a
session accepts approvals from that session's interlock only (`issued_by`), so a second
interlock built with made-up limits cannot approve anything for a device it does not guard.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import unicodedata
from dataclasses import dataclass, fields, is_dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

from .errors import InterlockStateError, Refusal
from .settings import ChannelSetting

if TYPE_CHECKING:
    from .interlock import Interlock

APPROVAL_TTL_S = 2.0   # an approval unused for this long is refused at consume()


@dataclass(frozen=True)
class SetChannel:
    setting: ChannelSetting


@dataclass(frozen=True)
class SetOutputs:
    enabled: frozenset[int]


@dataclass(frozen=True)
class ClearFaults:
    operator: str


def operator_name(operator: object) -> str:
    """The name or initials a stop is cleared in, NFKC-normalised (so look-alike forms of one
    name are one name), with at least two letters a person can see: no stop is cleared in
    nobody's name. Text that cannot be read back (undecodable bytes, control or invisible
    characters) is refused, never stored."""
    text = unicodedata.normalize("NFKC", operator).strip() if isinstance(operator, str) else ""
    readable = all(unicodedata.category(c)[0] in "LNPSZ" and unicodedata.category(c) not in ("Zl", "Zp")
                   for c in text)
    if not readable:
        raise Refusal("clear.operator", "the name given to clear a stop has characters that cannot be shown; "
                      "type it again in plain letters", value=operator.encode("unicode_escape").decode("ascii")
                      if isinstance(operator, str) else operator, limit="printable text")
    if sum(unicodedata.category(c).startswith("L") for c in text) < 2:
        raise Refusal("clear.operator", "clearing a stop needs the name or initials of the person clearing it "
                      "(at least two letters)", value=operator, limit="a name or initials: two letters or more")
    return " ".join(text.split())


ROUTINE_FAULTS = frozenset({"WATCHDOG", "ESTOP"})  # a stop and a lost controller: cleared where treatment goes on


def clear_refusal(latched: frozenset[str], named: frozenset[str], treating: bool) -> Refusal | None:
    """Why these latched faults may not be cleared here (None: they may). A stop or a lost
    controller may be cleared in the session that treats (on ICD v1 the only way); anything
    else (an overcurrent, a hardware fault, a fault this host does not know) is cleared only
    on its own, after a person has checked, naming it."""
    serious = latched - ROUTINE_FAULTS
    if serious and treating:
        return Refusal("clear.needs_review", f"{', '.join(sorted(serious))} is latched: it is not cleared in a "
                       "session that treats. Check the patient, the needles, the leads and the device, then clear "
                       "it on its own with estim clear-faults, naming it (--fault NAME)", value=sorted(serious),
                       limit=sorted(ROUTINE_FAULTS))
    unnamed = serious - named
    if unnamed:
        return Refusal("clear.unnamed_fault", f"{', '.join(sorted(unnamed))} is latched: name each fault you clear "
                       f"besides a stop or a lost controller (--fault {sorted(unnamed)[0].lower()})",
                       value=sorted(unnamed), limit="each one named")
    return None


@dataclass(frozen=True)
class SimControl:
    op: int
    channel: int
    value: int


Command = SetChannel | SetOutputs | ClearFaults | SimControl


def _plain(x: Any) -> Any:
    if isinstance(x, Enum):
        return x.name
    if isinstance(x, (frozenset, set)):
        return sorted(x)
    if is_dataclass(x):
        return {"type": type(x).__name__, **{f.name: _plain(getattr(x, f.name)) for f in fields(x)}}
    return x


def command_json(command: Command) -> dict[str, Any]:
    """Plain JSON-able form of a command (canonical input of the approval MAC)."""
    return _plain(command)


_KEY = secrets.token_bytes(32)
MINT = object()  # only the interlock module passes this


class Approved:
    """A command the interlock approved: unforgeable, single-use, short-lived, bound to its
    interlock (and so to that interlock's session and link)."""

    __slots__ = ("_command", "_serial", "_issued_s", "_epoch", "_owner", "_warnings", "_mac")

    def __init__(self, token: object, command: Command, serial: int, issued_s: float, epoch: int,
                 owner: Interlock, warnings: tuple[str, ...] = ()) -> None:
        if token is not MINT:
            raise InterlockStateError("only the Interlock may approve commands")
        for name, value in (("_command", command), ("_serial", serial), ("_issued_s", issued_s),
                            ("_epoch", epoch), ("_owner", owner), ("_warnings", warnings)):
            object.__setattr__(self, name, value)
        object.__setattr__(self, "_mac", self._compute_mac())

    def _compute_mac(self) -> bytes:
        body = json.dumps([self._serial, repr(self._issued_s), self._epoch, id(self._owner),
                           command_json(self._command), list(self._warnings)], sort_keys=True).encode()
        return hmac.new(_KEY, body, hashlib.sha256).digest()

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Approved is immutable")

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise TypeError("Approved cannot be pickled or copied")

    def __copy__(self) -> Approved:
        raise TypeError("Approved cannot be copied")

    def __deepcopy__(self, memo: Any) -> Approved:
        raise TypeError("Approved cannot be copied")

    @property
    def command(self) -> Command:
        return self._command

    @property
    def serial(self) -> int:
        return self._serial

    @property
    def issued_s(self) -> float:
        return self._issued_s

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def warnings(self) -> tuple[str, ...]:
        """Clinician warnings raised while approving (e.g. Shannon k at or above 1.5)."""
        return self._warnings

    def issued_by(self, interlock: Interlock) -> bool:
        """True when `interlock` minted this approval (identity, not equality)."""
        return self._owner is interlock

    def verify(self) -> None:
        """Raise if anything in this approval changed after it was minted."""
        try:
            good = type(self) is Approved and hmac.compare_digest(self._mac, self._compute_mac())
        except Exception as exc:  # a tampered field may not even serialise
            raise InterlockStateError(f"approval {self._serial} was tampered with") from exc
        if not good:
            raise InterlockStateError(f"approval {self._serial} was tampered with")

    def consume(self) -> Command:
        """Redeem once, within `APPROVAL_TTL_S`; returns the command to send."""
        self.verify()
        self._owner._redeem(self)
        return self._command

    def __repr__(self) -> str:
        return f"Approved(#{self._serial}, {self._command!r})"
