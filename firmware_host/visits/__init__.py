"""The visit store: patients by clinic code, their visits (screening, thresholds, doses,
outcomes, plan) and the heads of the treatment records written in them."""

from .store import (PLAN_KINDS, STORE_URL_ENV, Dose, Outcome, PatientInfo, Plan, RecordHead, RecordHeadError,
                    StoreError, Visit, VisitStore, default_url)

__all__ = ["PLAN_KINDS", "STORE_URL_ENV", "Dose", "Outcome", "PatientInfo", "Plan", "RecordHead", "RecordHeadError",
           "StoreError", "Visit", "VisitStore", "default_url"]
