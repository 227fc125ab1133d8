"""`estim sim`: the simulated device as its own process, for HIL tests and ICD clients."""

from __future__ import annotations


def main(argv: list[str]) -> int:
    from ..sim.server import main as serve

    return serve(argv)
