"""What each latched device fault means, in the words a clinician reads, and how to clear it.

One place, so the command line, the console and the records say the same thing.
"""

from __future__ import annotations

MEANING = {
    "WATCHDOG": "the device stopped hearing from its controller and switched its outputs off by itself "
                "(a controller that was closed without ending the session, crashed, lost the cable or was too "
                "busy to keep in touch; "
                "devices speaking ICD v1 do this after every session)",
    "ESTOP": "someone stopped the stimulation at once (an e-stop) in an earlier session",
    "OVERCURRENT": "the device measured more current than it allows and switched off: check the needles, "
                   "the leads and the patient before going on",
    "HARDWARE": "the device reported a hardware fault: have it checked before using it on a patient",
    "OPEN_CIRCUIT": "a needle circuit was open",
    "COMPLIANCE": "a load was too high for the current asked",
}


def explain(code: str) -> str:
    """`code: what it means` for a fault name (unknown codes are named as they are)."""
    return f"{code}: {MEANING.get(code, 'a fault this host does not know; have the device checked')}"


def clear_command(device: str) -> str:
    """The command that clears a latched stop, for messages that ask a person to clear one."""
    return f'estim clear-faults --device {device} --operator "YOUR NAME"'


SAME_SESSION = '--clear-faults --operator "YOUR NAME"'
"""Clears a stop in the session that treats: the only way on an ICD v1 device."""


def clear_hint(device: str, protocol_version: int) -> str:
    """How to clear a latched stop on this device. An ICD v1 device has no end of session, so a
    separate clear-faults run would latch WATCHDOG again when it closes: clear in the session."""
    if protocol_version < 2:
        return (f"add {SAME_SESSION} to the command (this device speaks ICD v1: a separate clear-faults run "
                "would latch WATCHDOG again as it closes)")
    return f"{clear_command(device)}, or add {SAME_SESSION} to the command"


def v1_note(serial: str, closing: str) -> str:
    """Said once on an ICD v1 device: it has no end of session, so `closing` (this session, this
    command) leaves WATCHDOG latched for the next one."""
    return (f"{serial} speaks ICD v1, which has no end of session: when {closing} closes, its watchdog will "
            f"latch WATCHDOG; start the next session with {SAME_SESSION}.")
