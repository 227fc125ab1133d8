"""How to switch one control off, for `--mutate`: a table, not hooks in production code.

Each rule id (or control) gets a `Disable`: plain data naming a mechanism and its target,
applied by `applied()` in the test process and undone after. Mechanisms:

- `static_rule`: a row of `safety.rules.RULES`. A row with a fixed layer is replaced by one
  that never applies; a layered row is switched off only where that layer sets the limit
  (its limit column in `LimitArrays.for_rows` becomes ±inf on those rows), which is
  exactly "this id is never emitted", on the interlock's and on the program check's path.
- `emission_removed`: the statement that makes the refusal becomes `pass`, in a copy of
  the function compiled from its source (a mutant, as mutation testers make them), bound
  in place of the original; the code goes on as if the check had passed.
- `swallowed`: a choke point every refusal of the id passes (e.g. `Interlock._refuse`)
  returns instead of raising for that id.
- `filtered`: a function's returned refusals (a list, or a verdict's `refusals`) lose the id.
- `returns`: a method returns a fixed value (for controls that are not rule ids, e.g. a
  supervision check that finds nothing).

Which one applies: the first row of `MUTATIONS` whose pattern matches the id; else a static
rule's id is `static_rule`; else an id emitted alone by each of its statements is
`emission_removed`. Anything else is an error asking for a row: add one when a new rule is
built so that one statement emits several ids, or its check has a better choke point.
`CONTROL_MUTATIONS` does the same for controls named by code reference in the log.
"""

from __future__ import annotations

import __future__
import ast
import copy
import dataclasses
import functools
import importlib
import sys
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from . import REPO
from .ids import RuleIds

# (rule id pattern, mechanism, target "module:Qualified.name"): first match wins
MUTATIONS: tuple[tuple[str, str, str], ...] = (
    # one statement emits each of these with an id computed from the rise it judges
    ("*.ramp_rate", "swallowed", "safety.interlock:Interlock._refuse"),
    ("device.max_step", "swallowed", "safety.interlock:Interlock._refuse"),
    ("dynamic.intensity_*", "swallowed", "safety.interlock:Interlock._refuse"),
    # malignancy, clot and skin come from one statement in a loop; the verdict is the choke point
    ("screening.*", "filtered", "safety.screening:screen"),
)

# control reference in the log -> (mechanism, target, value it returns)
CONTROL_MUTATIONS: dict[str, tuple[str, str, Any]] = {
    "safety/supervisor.py::Supervisor.poll": ("returns", "safety.supervisor:Supervisor.poll", []),
    "safety/supervisor.py::Supervisor._mismatch": ("returns", "safety.supervisor:Supervisor._mismatch", ""),
    "safety/supervisor.py::Supervisor._charge_mismatch":
        ("returns", "safety.supervisor:Supervisor._charge_mismatch", ""),
    "safety/supervisor.py::Supervisor.on_fault": ("returns", "safety.supervisor:Supervisor.on_fault", []),
}


class MutationError(Exception):
    """A control the table cannot switch off, or a mutant that cannot be built."""


@dataclass(frozen=True)
class Disable:
    """How to switch off one control (a rule id or a code reference), as JSON-able data."""

    control: str
    how: str
    target: str = ""
    sites: tuple[tuple[str, str, int], ...] = ()   # (path, function qualname, statement line)
    value: Any = None

    @property
    def rule(self) -> str:
        """The rule id (without the site of a per-site mutation)."""
        return self.control.split("@")[0]

    def describe(self) -> str:
        if self.how == "emission_removed":
            return "refusal removed at " + ", ".join(f"{p}:{line}" for p, _, line in self.sites)
        if self.how == "static_rule":
            return f"RULES row {self.target!r} off where the {self.control.split('.')[0]} layer binds"
        return f"{self.how} {self.target}"

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Disable:
        return cls(data["control"], data["how"], data.get("target", ""),
                   tuple(tuple(s) for s in data.get("sites", ())), data.get("value"))  # type: ignore[misc]


def disable_for(rule: str, ids: RuleIds) -> Disable:
    """The way to switch rule `rule` off alone; "<id>@<path>:<line>" switches off only the
    statement at that site (for an id made in several places)."""
    if "@" in rule:
        whole = disable_for(rule.split("@")[0], ids)
        sites = tuple(s for s in whole.sites if f"{s[0]}:{s[2]}" == rule.split("@")[1])
        if whole.how != "emission_removed" or not sites:
            raise MutationError(f"{rule}: no such site of a refusal removed statement by statement")
        return Disable(rule, whole.how, sites=sites)
    for pattern, how, target in MUTATIONS:
        if fnmatchcase(rule, pattern):
            return Disable(rule, how, target)
    if rule in ids.table:
        return Disable(rule, "static_rule", ids.table[rule])
    sites = ids.sites.get(rule, [])
    if sites and all(len(s.ids) == 1 and s.function for s in sites):
        return Disable(rule, "emission_removed", sites=tuple(sorted({(s.path, s.function, s.statement)
                                                                       for s in sites})))
    where = ", ".join(s.where() for s in sites) or "nowhere"
    raise MutationError(f"no way to switch {rule} off alone (emitted at {where}): add a row to MUTATIONS in "
                        f"safety/trace/mutations.py")


def disable_control(ref: str) -> Disable:
    """The way to switch off a control named by code reference in the log."""
    if ref not in CONTROL_MUTATIONS:
        raise MutationError(f"no way to switch {ref} off: add it to CONTROL_MUTATIONS in safety/trace/mutations.py")
    how, target, value = CONTROL_MUTATIONS[ref]
    return Disable(ref, how, target, value=value)


# --- applying a Disable -----------------------------------------------------------------

_MISSING = object()


class _Patches:
    """Attribute changes, undone in reverse order."""

    def __init__(self) -> None:
        self._undo: list[tuple[object, str, Any]] = []

    def set(self, owner: object, name: str, value: Any) -> None:
        self._undo.append((owner, name, vars(owner).get(name, _MISSING)))
        setattr(owner, name, value)

    def rebind(self, original: object, new: object) -> None:
        """Replace `original` wherever a module holds it (from-imports included)."""
        count = 0
        for module in list(sys.modules.values()):
            for name, value in list(getattr(module, "__dict__", {}).items()):
                if value is original:
                    self.set(module, name, new)
                    count += 1
        if not count:
            raise MutationError(f"{original!r} is bound in no module")

    def undo(self) -> None:
        while self._undo:
            owner, name, value = self._undo.pop()
            if value is _MISSING:
                delattr(owner, name)
            else:
                setattr(owner, name, value)


@contextmanager
def applied(disable: Disable) -> Iterator[None]:
    """`disable` in force for the duration of the block."""
    patches = _Patches()
    try:
        MECHANISMS[disable.how](disable, patches)
        yield
    finally:
        patches.undo()


def _resolve(target: str) -> tuple[ModuleType, object, str]:
    """(module, owner, attribute) of "module:Qualified.name"; MutationError when it is gone."""
    module_name, _, qualname = target.partition(":")
    try:
        module = importlib.import_module(module_name)
        owner: object = module
        *path, name = qualname.split(".")
        for part in path:
            owner = getattr(owner, part)
        getattr(owner, name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise MutationError(f"mutation target {target} does not exist ({exc}): update safety/trace/mutations.py") from exc
    return module, owner, name


def check_target(disable: Disable) -> None:
    """Raise MutationError when what `disable` would patch does not exist."""
    if disable.target and disable.how != "static_rule":
        _resolve(disable.target)


def _static_rule(disable: Disable, patches: _Patches) -> None:
    from safety import rules

    row = next(r for r in rules.RULES if r.key == disable.target)
    if row.layer:
        never = dataclasses.replace(row, applies=lambda s: np.zeros(s.amplitude_ma.shape, bool))
        patches.rebind(rules.RULES, tuple(never if r is row else r for r in rules.RULES))
        return
    layer, column = disable.rule.split(".")[0], _limit_column(row)
    unbounded = -np.inf if row.bound == "min" else np.inf
    for_rows = rules.LimitArrays.__dict__["for_rows"].__func__

    def without_layer(cls: type, limits: Any) -> Any:
        arrays = for_rows(cls, limits)
        values = getattr(arrays, column).copy()
        for i, lim in enumerate(limits):
            if lim.sources.get(row.key) == layer:
                values[i] = unbounded
        return dataclasses.replace(arrays, **{column: values})

    patches.set(rules.LimitArrays, "for_rows", classmethod(without_layer))


def _limit_column(row: Any) -> str:
    """The LimitArrays column a layered row's limit reads."""
    seen: list[str] = []

    class Probe:
        def __getattr__(self, name: str) -> float:
            seen.append(name)
            return 1.0

    row.limit(Probe())
    if len(seen) != 1:
        raise MutationError(f"RULES row {row.key!r} reads {seen} from its limits, not one column")
    return seen[0]


def _emission_removed(disable: Disable, patches: _Patches) -> None:
    by_function: dict[tuple[str, str], set[int]] = defaultdict(set)
    for path, function, line in disable.sites:
        by_function[(path, function)].add(line)
    for (path, function), lines in by_function.items():
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        mutant = mutant_function(REPO / path, module, function, lines)
        _, owner, name = _resolve(f"{module.__name__}:{function}")
        if isinstance(owner, type):
            patches.set(owner, name, mutant)
        else:
            patches.rebind(getattr(owner, name), mutant)


def mutant_function(path: Path, module: ModuleType, qualname: str, lines: set[int]) -> Any:
    """`qualname` of `module`, compiled from its source with the statements at `lines` made `pass`."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    body: list[ast.stmt] = tree.body
    node: ast.AST | None = None
    for part in qualname.split("."):
        node = next((n for n in body if isinstance(n, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                     and n.name == part), None)
        if node is None:
            raise MutationError(f"{path}: no {qualname}")
        body = node.body  # type: ignore[attr-defined]
    assert isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
    if any(isinstance(n, ast.Name) and n.id == "super" for n in ast.walk(node)):
        raise MutationError(f"{qualname} uses super(): a mutant compiled outside its class cannot")
    removed = set()
    for parent in list(ast.walk(node)):
        for field in ("body", "orelse", "finalbody"):
            statements = getattr(parent, field, None)
            if not isinstance(statements, list):
                continue
            for i, stmt in enumerate(statements):
                innermost = not any(isinstance(n, ast.stmt) and n is not stmt and n.lineno == stmt.lineno
                                    for n in ast.walk(stmt))
                if stmt.lineno in lines and innermost:
                    statements[i] = ast.copy_location(ast.Pass(), stmt)
                    removed.add(stmt.lineno)
    if removed != lines:
        raise MutationError(f"{path}: no statement at lines {sorted(lines - removed)} in {qualname}")
    code = compile(ast.fix_missing_locations(ast.Module(body=[node], type_ignores=[])), str(path), "exec",
                   flags=__future__.annotations.compiler_flag, dont_inherit=True)
    namespace: dict[str, Any] = {}
    exec(code, vars(module), namespace)  # noqa: S102 - our own source, one statement changed
    return namespace[node.name]


def _swallowed(disable: Disable, patches: _Patches) -> None:
    _, owner, name = _resolve(disable.target)
    original = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)

    @functools.wraps(original)
    def choke(*args: Any, **kwargs: Any) -> Any:
        if any(getattr(a, "rule", None) == disable.rule for a in (*args, *kwargs.values())):
            return None
        return original(*args, **kwargs)

    patches.set(owner, name, choke)


def _filtered(disable: Disable, patches: _Patches) -> None:
    _, owner, name = _resolve(disable.target)
    original = getattr(owner, name)

    def keep(refusals: Any) -> Any:
        return type(refusals)(r for r in refusals if getattr(r, "rule", None) != disable.rule)

    @functools.wraps(original)
    def filtered(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        if isinstance(result, (list, tuple)):
            return keep(result)
        return dataclasses.replace(result, refusals=keep(result.refusals))

    if isinstance(owner, type):
        patches.set(owner, name, filtered)
    else:
        patches.rebind(original, filtered)


def _returns(disable: Disable, patches: _Patches) -> None:
    _, owner, name = _resolve(disable.target)

    def constant(*_args: Any, **_kwargs: Any) -> Any:
        return copy.deepcopy(disable.value)

    patches.set(owner, name, constant)


MECHANISMS: dict[str, Callable[[Disable, _Patches], None]] = {
    "static_rule": _static_rule,
    "emission_removed": _emission_removed,
    "swallowed": _swallowed,
    "filtered": _filtered,
    "returns": _returns,
}
