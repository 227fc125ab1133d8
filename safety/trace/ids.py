"""Every rule id the interlock can emit, derived from the code (never a hand-kept list).

Two sources, joined:

- the static rules table, `safety.rules.RULES`: each row's id is "<layer>.<key>", with a
  fixed layer or, for layered rows, every layer `effective_limits` can take that limit
  from (read from its `take("<key>", kind, ("<layer>", value), ...)` calls);
- a static scan of the emitting modules (`EMITTERS`) for `Refusal(<id>, ...)`, and for calls
  of any function that passes one of its own parameters on as a Refusal's id (screening's
  `_refuse`). An id that is not a string literal is resolved from the code around it: an
  f-string, a name assigned in the function (both branches of `a if c else b`, `a or b`),
  a loop variable over a literal tuple or a module constant (`for rule in RULES`), a module
  constant, or `<limits>.sources["<key>"]` (the layers of that key). Anything else, a call
  say, is an error naming the file, the line and the expression: the trace never guesses.

A Refusal made from another one's id (`Refusal(exc.rule, ...)`) adds no id: the first one
was counted where it was made.
"""

from __future__ import annotations

import ast
import importlib
import itertools
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from . import REPO

# Where the interlock's refusals are made: the safety package, and the link's binding of an
# interlock to the device it guards (`session.device_limits`).
EMITTERS = ("safety/*.py", "firmware_host/link.py")
LIMITS_MODULE = "safety/limits.py"   # where `take(...)` names the layers of each limit
DEFS = (ast.FunctionDef, ast.AsyncFunctionDef)
COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)

HOW_TO_FIX = ("write the id as a string literal, or build it only from constants, loop variables over "
              "constants and limits.sources[...]; if a new construct is needed, teach safety/trace/ids.py "
              "to resolve it")


class UnresolvedRuleId(Exception):
    """A refusal whose id the trace cannot work out from the code."""


@dataclass(frozen=True)
class Site:
    """One place in the code that emits rule ids."""

    path: str         # repo-relative file
    line: int         # line of the call that makes the refusal
    function: str     # qualname of the outermost def around it ("" at module level)
    statement: int    # line of the statement holding the call (what a mutant removes)
    expression: str   # the id as written
    ids: tuple[str, ...]

    def where(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass
class RuleIds:
    """Every emitted id with the sites that emit it; `table` maps the ids of static rules to
    their `RULES` key."""

    sites: dict[str, list[Site]] = field(default_factory=dict)
    table: dict[str, str] = field(default_factory=dict)

    @property
    def ids(self) -> list[str]:
        return sorted(set(self.sites) | set(self.table))


def derive(root: Path = REPO, emitters: Iterable[str] = EMITTERS) -> RuleIds:
    """Scan `emitters` under `root` and expand the RULES table; raises `UnresolvedRuleId`
    listing every id it cannot resolve. Module constants an id is built from are read from
    the importable module of the same name."""
    files = sorted({p for pattern in emitters for p in root.glob(pattern) if p.is_file()})
    trees = {p: ast.parse(p.read_text(encoding="utf-8"), filename=str(p)) for p in files}
    layers = _layers(root / LIMITS_MODULE)
    wrappers = {name: index for tree in trees.values() for name, index in _wrappers(tree)}
    found: dict[str, list[Site]] = defaultdict(list)
    errors: list[str] = []
    for path, tree in trees.items():
        rel = path.relative_to(root).as_posix()
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call)):
            arg = _id_argument(call, wrappers)
            if arg is None or _forwarded(arg, call, parents):
                continue
            try:
                ids = _Resolver(rel, parents, layers).ids(arg, call)
            except _Unresolved as exc:
                errors.append(f"{rel}:{call.lineno}: cannot resolve the rule id {ast.unparse(arg)}: {exc}")
                continue
            site = Site(rel, call.lineno, _qualname(call, parents), _statement(call, parents).lineno,
                        ast.unparse(arg), tuple(sorted(ids)))
            for rule_id in site.ids:
                found[rule_id].append(site)
    if errors:
        raise UnresolvedRuleId("\n".join(errors) + f"\n(how to fix: {HOW_TO_FIX})")
    return RuleIds(dict(found), _table_ids(layers))


# --- the RULES table ----------------------------------------------------------------------

def _table_ids(layers: dict[str, tuple[str, ...]]) -> dict[str, str]:
    from safety.rules import RULES

    out = {}
    for rule in RULES:
        for layer in (rule.layer,) if rule.layer else _layers_of(layers, rule.key):
            out[f"{layer}.{rule.key}"] = rule.key
    return out


def _layers(limits_file: Path) -> dict[str, tuple[str, ...]]:
    """Limit key -> the layers `effective_limits` may take it from, in order."""
    out: dict[str, tuple[str, ...]] = {}
    for call in ast.walk(ast.parse(limits_file.read_text(encoding="utf-8"))):
        if isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "take" \
                and call.args and isinstance(call.args[0], ast.Constant):
            out[call.args[0].value] = tuple(arg.elts[0].value for arg in call.args[2:]
                                            if isinstance(arg, ast.Tuple) and isinstance(arg.elts[0], ast.Constant))
    return out


def _layers_of(layers: dict[str, tuple[str, ...]], key: object) -> tuple[str, ...]:
    if key not in layers or not layers[key]:
        raise _Unresolved(f"no layer sets the limit {key!r} (the trace reads the layers from the take(...) "
                          f"calls in {LIMITS_MODULE})")
    return layers[key]


# --- the scan -----------------------------------------------------------------------------

def _is_refusal(func: ast.expr) -> bool:
    return (isinstance(func, ast.Name) and func.id == "Refusal") or (
        isinstance(func, ast.Attribute) and func.attr == "Refusal")


def _params(func: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    a = func.args
    return [p.arg for p in a.posonlyargs + a.args + a.kwonlyargs]


def _refusal_id(call: ast.Call) -> ast.expr | None:
    if call.args:
        return call.args[0]
    return next((k.value for k in call.keywords if k.arg == "rule"), None)


def _wrappers(tree: ast.Module) -> Iterator[tuple[str, int]]:
    """Functions that pass a parameter on as a Refusal's id: (name, index of that parameter)."""
    for func in (n for n in ast.walk(tree) if isinstance(n, DEFS)):
        params = _params(func)
        for call in (n for n in ast.walk(func) if isinstance(n, ast.Call) and _is_refusal(n.func)):
            arg = _refusal_id(call)
            if isinstance(arg, ast.Name) and arg.id in params:
                yield func.name, params.index(arg.id)


def _id_argument(call: ast.Call, wrappers: dict[str, int]) -> ast.expr | None:
    if _is_refusal(call.func):
        return _refusal_id(call)
    if isinstance(call.func, ast.Name) and call.func.id in wrappers:
        index = wrappers[call.func.id]
        return call.args[index] if len(call.args) > index else next(
            (k.value for k in call.keywords if k.arg == "rule"), None)
    return None


def _forwarded(arg: ast.expr, call: ast.Call, parents: dict[ast.AST, ast.AST]) -> bool:
    """The id is a wrapper's own parameter (its callers are the sites) or another refusal's id."""
    if isinstance(arg, ast.Attribute) and arg.attr == "rule":
        return True
    func = _nearest_def(call, parents)
    return isinstance(arg, ast.Name) and func is not None and arg.id in _params(func) \
        and _is_refusal(call.func)


def _ancestors(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> Iterator[ast.AST]:
    while node in parents:
        node = parents[node]
        yield node


def _nearest_def(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> ast.FunctionDef | None:
    return next((a for a in _ancestors(node, parents) if isinstance(a, DEFS)), None)  # type: ignore[return-value]


def _qualname(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> str:
    """Qualname of the outermost def around `node` (with its class), "" at module level."""
    chain = [a for a in _ancestors(node, parents) if isinstance(a, (*DEFS, ast.ClassDef))]
    outer = [a for a in chain if isinstance(a, DEFS)]
    if not outer:
        return ""
    top = outer[-1]
    classes = [a.name for a in chain[chain.index(top) + 1:] if isinstance(a, ast.ClassDef)]
    return ".".join([*reversed(classes), top.name])


def _statement(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> ast.stmt:
    return next(a for a in (node, *_ancestors(node, parents)) if isinstance(a, ast.stmt))  # type: ignore[return-value]


# --- resolving an id that is not a literal ------------------------------------------------

class _Unresolved(Exception):
    pass


def _is_sources(node: ast.AST) -> bool:
    return isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute) and node.value.attr == "sources"


class _Resolver:
    """Works out the values an id expression can take, from the code around it."""

    def __init__(self, rel: str, parents: dict[ast.AST, ast.AST], layers: dict[str, tuple[str, ...]]) -> None:
        self._module_name = rel.removesuffix(".py").replace("/", ".")
        self._module: ModuleType | None = None
        self._parents = parents
        self._layers = layers
        self._func: ast.FunctionDef | None = None
        self._assigned: dict[str, list[ast.expr]] = {}
        self._params: list[str] = []

    def ids(self, expr: ast.expr, at: ast.AST) -> set[str]:
        self._func = _nearest_def(at, self._parents)
        if self._func is not None:
            self._params = _params(self._func)
            for node in self._own_nodes(self._func):
                if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                    self._assigned.setdefault(node.targets[0].id, []).append(node.value)
                elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value:
                    self._assigned.setdefault(node.target.id, []).append(node.value)
        loops = self._loops(self._names(expr, set()), at)
        out: set[str] = set()
        for env in self._bindings(loops):
            for value in self._values(expr, env, frozenset()):
                if not isinstance(value, str):
                    raise _Unresolved(f"it can be {value!r}, which is not text")
                out.add(value)
        return out

    def _own_nodes(self, func: ast.AST) -> Iterator[ast.AST]:
        """Nodes of `func`, not of defs nested in it."""
        for child in ast.iter_child_nodes(func):
            if not isinstance(child, (*DEFS, ast.ClassDef, ast.Lambda)):
                yield child
                yield from self._own_nodes(child)

    def _module_globals(self) -> ModuleType:
        if self._module is None:
            self._module = importlib.import_module(self._module_name)
        return self._module

    def _names(self, node: ast.AST, seen: set[str]) -> set[str]:
        """Names the value of `node` depends on (conditions of `a if c else b` excluded)."""
        if isinstance(node, ast.Name):
            if node.id in seen:
                return set()
            seen.add(node.id)
            return {node.id}.union(*(self._names(e, seen) for e in self._assigned.get(node.id, [])))
        if isinstance(node, ast.IfExp):
            return self._names(node.body, seen) | self._names(node.orelse, seen)
        if _is_sources(node):
            return self._names(node.slice, seen)  # type: ignore[attr-defined]
        return set().union(*(self._names(c, seen) for c in ast.iter_child_nodes(node)))

    def _loops(self, names: set[str], at: ast.AST) -> list[tuple[ast.expr, ast.expr]]:
        """(target, iterable) of every loop around `at` that binds one of `names`."""
        loops = []
        for node in _ancestors(at, self._parents):
            if node is self._func:
                break
            generators: list[Any] = [node] if isinstance(node, ast.For) else (
                node.generators if isinstance(node, COMPREHENSIONS) else [])
            for gen in generators:
                if {n.id for n in ast.walk(gen.target) if isinstance(n, ast.Name)} & names:
                    loops.append((gen.target, gen.iter))
        return loops

    def _bindings(self, loops: list[tuple[ast.expr, ast.expr]]) -> Iterator[dict[str, Any]]:
        choices = []
        for target, iterable in loops:
            values = self._values(iterable, {}, frozenset())
            if len(values) != 1:
                raise _Unresolved(f"the loop over {ast.unparse(iterable)} is not over one known collection")
            items = values[0]
            try:
                choices.append([self._unpack(target, item) for item in items])
            except TypeError as exc:
                raise _Unresolved(f"the loop over {ast.unparse(iterable)} cannot be unpacked ({exc})") from exc
        for combo in itertools.product(*choices):
            env: dict[str, Any] = {}
            for part in combo:
                env.update(part)
            yield env

    def _unpack(self, target: ast.expr, item: Any) -> dict[str, Any]:
        if isinstance(target, ast.Name):
            return {target.id: item}
        if isinstance(target, (ast.Tuple, ast.List)):
            values = list(item)
            if len(values) != len(target.elts):
                raise TypeError(f"{len(values)} values for {len(target.elts)} names")
            out: dict[str, Any] = {}
            for t, v in zip(target.elts, values):
                out.update(self._unpack(t, v))
            return out
        raise _Unresolved(f"loop target {ast.unparse(target)}")

    def _values(self, node: ast.AST, env: dict[str, Any], resolving: frozenset[str]) -> list[Any]:
        if isinstance(node, ast.Constant):
            return [node.value]
        if isinstance(node, ast.JoinedStr):
            parts = [[p.value] if isinstance(p, ast.Constant)
                     else [self._format(v, p) for v in self._values(p.value, env, resolving)]  # type: ignore[attr-defined]
                     for p in node.values]
            return ["".join(combo) for combo in itertools.product(*parts)]
        if isinstance(node, ast.IfExp):
            return self._values(node.body, env, resolving) + self._values(node.orelse, env, resolving)
        if isinstance(node, ast.BoolOp) and isinstance(node.op, ast.Or):
            out = []
            for operand in node.values:
                values = self._values(operand, env, resolving)
                out += [v for v in values if v]
                if all(values):
                    break
            return out
        if isinstance(node, ast.Name):
            return self._name(node.id, env, resolving)
        if isinstance(node, ast.Attribute):
            try:
                return [getattr(v, node.attr) for v in self._values(node.value, env, resolving)]
            except AttributeError as exc:
                raise _Unresolved(str(exc)) from exc
        if _is_sources(node):
            return [layer for key in self._values(node.slice, env, resolving)  # type: ignore[attr-defined]
                    for layer in _layers_of(self._layers, key)]
        if isinstance(node, ast.Subscript):
            try:
                return [v[k] for v in self._values(node.value, env, resolving)
                        for k in self._values(node.slice, env, resolving)]
            except (KeyError, IndexError, TypeError) as exc:
                raise _Unresolved(f"{ast.unparse(node)}: {exc!r}") from exc
        if isinstance(node, (ast.Tuple, ast.List)):
            return [tuple(combo) for combo in itertools.product(*(self._values(e, env, resolving) for e in node.elts))]
        raise _Unresolved(f"{ast.unparse(node)} is worked out only when the code runs")

    def _name(self, name: str, env: dict[str, Any], resolving: frozenset[str]) -> list[Any]:
        if name in env:
            return [env[name]]
        if name in resolving:
            raise _Unresolved(f"{name} is assigned from itself")
        if name in self._assigned:
            return [v for e in self._assigned[name] for v in self._values(e, env, resolving | {name})]
        if name in self._params:
            raise _Unresolved(f"{name} is a parameter: its callers decide it")
        module = self._module_globals()
        if hasattr(module, name):
            return [getattr(module, name)]
        raise _Unresolved(f"{name} is neither assigned here, a loop variable nor a module constant")

    @staticmethod
    def _format(value: Any, part: ast.FormattedValue) -> str:
        if part.conversion == ord("r"):
            value = repr(value)
        elif part.conversion == ord("a"):
            value = ascii(value)
        elif part.conversion == ord("s"):
            value = str(value)
        if part.format_spec is None:
            return format(value)
        if isinstance(part.format_spec, ast.JoinedStr) and all(isinstance(p, ast.Constant) for p in part.format_spec.values):
            return format(value, "".join(p.value for p in part.format_spec.values))  # type: ignore[attr-defined]
        raise _Unresolved("a computed format spec")
