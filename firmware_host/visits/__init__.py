"""The visit store: patients by clinic code, their visits (screening, thresholds, doses,
outcomes, plan, each kept as entries that are never changed) and the signed heads of the
treatment records written in them."""

from .store import STORE_URL_ENV, VisitStore, default_url
from .values import (PLAN_KINDS, Dose, Entry, Outcome, OutcomeEntry, PatientInfo, Plan, PlanEntry, RecordHead,
                     RecordHeadError, StoreError, Visit)

__all__ = ["PLAN_KINDS", "STORE_URL_ENV", "Dose", "Entry", "Outcome", "OutcomeEntry", "PatientInfo", "Plan",
           "PlanEntry", "RecordHead", "RecordHeadError", "StoreError", "Visit", "VisitStore", "default_url"]
