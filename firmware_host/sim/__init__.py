"""The simulated stimulator: the firmware model behind ICD.md and the loops that serve it."""

from .config import SimConfig
from .device import SimulatedDevice
from .process import SimProcess, Trace, child_env, spawn_sim
from .server import DeviceLoop, serve_pty, serve_tcp, start_in_process

__all__ = ["DeviceLoop", "SimConfig", "SimProcess", "SimulatedDevice", "Trace", "child_env", "serve_pty", "serve_tcp",
           "spawn_sim", "start_in_process"]
