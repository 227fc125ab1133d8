"""The safety case as data, checked: hazard log ↔ rule ids in the code ↔ tests.

`python -m safety.trace` derives every rule id the interlock can emit from the code
(`ids`), loads the hazard log (`safety/hazards.toml`, `log`), checks that each id is a
control of some hazard and that every control and test the log names exists (`check`),
and writes the trace matrix (`matrix`, docs/hazards.md). `--mutate` disables each rule in
turn and runs its hazards' tests (`mutations`, `mutate`, `plugin`); `--soup` writes the
SOUP list from the installed dependency set (`soup`).

A development tool: it reads the source tree (tests/, docs/) and is never imported by
`safety` itself, so the interlock loads nothing of it.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LOG_PATH = REPO / "safety" / "hazards.toml"
MATRIX_PATH = REPO / "docs" / "hazards.md"
