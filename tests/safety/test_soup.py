"""The SOUP list (IEC 62304 §8.1.2): every runtime dependency, as installed, has a role and a
reason in safety/soup.toml, and docs/soup.md is generated from the installed set's SBOM."""

from __future__ import annotations

import re

from safety.trace.soup import SOUP_DOC, components, hand_kept, markdown, problems, runtime_set, sbom

REGENERATE = "then run `python -m safety.trace --soup` and commit docs/soup.md"


def rows(text: str) -> dict[str, tuple[str, str]]:
    """component -> (role, why) of a SOUP table (versions and licences depend on the install)."""
    out = {}
    for line in text.splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if len(cells) == 6 and cells[0] not in ("component", "---"):
            out[cells[0].removesuffix(" **(safety)**")] = (cells[4], cells[5])
    return out


def test_every_runtime_dependency_has_a_role_and_a_reason() -> None:
    runtime = runtime_set()
    assert {"numpy", "pydantic", "pyserial", "sqlalchemy", "fhir-resources"} <= set(runtime)
    assert not {"pytest", "hypothesis", "psycopg", "cyclonedx-bom"} & set(runtime)   # extras do not run
    assert "needle-estim" in runtime["numpy"] and "matplotlib" in runtime["pyparsing"]
    found = problems(runtime, hand_kept())
    assert not found, "\n".join(found) + "\n" + REGENERATE


def test_a_missing_or_stale_entry_is_named() -> None:
    runtime, kept = runtime_set(), hand_kept()
    runtime["new-dependency"] = {"numpy"}
    del kept["pyserial"]
    kept["left-behind"] = {"role": "r", "why": "w"}
    found = "\n".join(problems(runtime, kept))
    assert "new-dependency (required by numpy) is a runtime dependency with no entry" in found
    assert "pyserial (required by needle-estim) is a runtime dependency with no entry" in found
    assert "left-behind is not a runtime dependency any more" in found


def test_the_soup_list_is_the_sbom_joined_with_the_roles() -> None:
    runtime, kept = runtime_set(), hand_kept()
    comps, missing = components(sbom(), runtime)
    assert not missing, f"installed but not in the CycloneDX SBOM: {missing}"
    assert {c.name for c in comps} == set(runtime) and all(c.version for c in comps)
    generated = rows(markdown(comps, kept))
    assert generated["numpy"] == (kept["numpy"]["role"].replace("|", "\\|"), kept["numpy"]["why"].replace("|", "\\|"))
    assert rows(SOUP_DOC.read_text(encoding="utf-8")) == generated, f"docs/soup.md is stale: {REGENERATE}"
