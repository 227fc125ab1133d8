"""The visit store: patients by clinic code, their visits (screening, thresholds, doses,
outcomes, plan, each kept as entries that are never changed) and the signed heads of the
treatment records written in them. Names are loaded on first use: reading a record head
(`visits.heads`) does not load the database layer."""

from __future__ import annotations

from safety.lazy import exports

__all__, __getattr__ = exports(__name__, {
    "store": ("VisitStore",),
    "heads": ("open_heads",),
    "where": ("STORE_URL_ENV", "default_url"),
    "values": ("PLAN_KINDS", "Dose", "Entry", "Outcome", "OutcomeEntry", "PatientInfo", "Plan", "PlanEntry",
               "RecordHead", "RecordHeadError", "StoreError", "Visit"),
})
