"""Session report (PDF), FHIR R4 export and record plots, built from a treatment record."""
