"""The full-screen treatment-room console (Textual); `estim console` starts it."""

from .app import ChannelControl, ConsoleApp, ConsoleSettings

__all__ = ["ChannelControl", "ConsoleApp", "ConsoleSettings"]
