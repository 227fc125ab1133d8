"""The visit store: patients by clinic code, their visits (screening, thresholds, doses,
outcomes, plan, each kept as entries that are never changed) and the signed heads of the
treatment records written in them. Names are loaded on first use: reading a record head
(`visits.heads`) does not load the database layer."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "store": ("VisitStore",),
    "heads": ("open_heads",),
    "where": ("STORE_URL_ENV", "default_url"),
    "values": ("PLAN_KINDS", "Dose", "Entry", "Outcome", "OutcomeEntry", "PatientInfo", "Plan", "PlanEntry",
               "RecordHead", "RecordHeadError", "StoreError", "Visit"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'firmware_host.visits' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
