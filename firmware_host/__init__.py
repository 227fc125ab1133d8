"""Host controller for a needle e-stim stimulator speaking ICD v2 (and v1 devices too).

    import firmware_host as fh
    with fh.open("sim://", prescription=..., placements=...) as stim:
        stim.configure(1, frequency_hz=2, pulse_width_us=200)
        stim.enable(1)
        stim.ramp(1, 2.0)

Every command that can change the output passes the session's safety interlock.
Names are loaded on first use so that `estim --help` does not pay for NumPy and pydantic.
"""

from __future__ import annotations

from safety.lazy import exports

INTENDED_USE = "For research and investigational use only: not a cleared medical device."
"""Said wherever the product meets a person: help, every session's start, the console, the report."""

__all__, __getattr__ = exports(__name__, {
    "errors": ("DeviceBusy", "DeviceNotFound", "DeviceRebooted", "DeviceRefused", "EstimError", "HandshakeFailed",
               "LinkError", "LinkTimeout", "PlaceNotAcquired", "ProtocolMismatch", "TransportClosed", "TransportError"),
    "stimulator": ("DeviceFault", "DeviceStatus", "Notice", "Stimulator", "connect", "open"),
})
__all__ = sorted([*__all__, "INTENDED_USE"])
