"""The full-screen treatment-room console (Textual); `estim console` starts it."""

from .app import ConsoleApp, ConsoleSettings
from .controls import ChannelControl, ProgramControl

__all__ = ["ChannelControl", "ConsoleApp", "ConsoleSettings", "ProgramControl"]
