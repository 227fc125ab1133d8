"""Benchmarks of the host controller against the simulator process (pty and TCP loopback).

Run `python -m bench [--quick] [--json PATH] [--only NAME ...]`; see `bench/run.py`.
"""
