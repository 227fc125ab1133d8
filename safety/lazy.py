"""Names a package exports, loaded on first use (PEP 562): a package's `__init__` stays light,
so a command that needs one small part of it (verifying a record, `--help`) does not load
NumPy, pydantic or a database layer."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any


def exports(package: str, modules: Mapping[str, Iterable[str]]) -> tuple[list[str], Callable[[str], Any]]:
    """(`__all__`, `__getattr__`) for `package`, whose submodule `m` exports `modules[m]`."""
    where = {name: module for module, names in modules.items() for name in names}

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{module}", package), name)
        setattr(sys.modules[package], name, value)
        return value

    return sorted(where), __getattr__
