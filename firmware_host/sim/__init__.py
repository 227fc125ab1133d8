"""The simulated stimulator: the firmware model behind ICD.md and the loops that serve it."""

from .config import SimConfig
from .device import SimulatedDevice
from .server import DeviceLoop, serve_pty, serve_tcp, start_in_process

__all__ = ["DeviceLoop", "SimConfig", "SimulatedDevice", "serve_pty", "serve_tcp", "start_in_process"]
