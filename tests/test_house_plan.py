"""The shape of the code: no import circles, one error root, modules small enough to read.

The import graph is read from the source (imports inside functions and
``TYPE_CHECKING`` blocks included), so a circle hidden behind a function-level
import is still a circle.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

from constitution.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("constitution", "engine")
LONG = 500
"""Lines a module may have before its docstring must say why it is longer."""


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _owner(name: str, modules: dict[str, Path]) -> str | None:
    """The project module that ``name`` (a module or ``module.attribute``) lives in."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports, anywhere in its source."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                targets = [f"{module}.{alias.name}" for alias in node.names]
            for target in targets:
                owner = _owner(target, modules)
                if owner and owner != name:
                    graph[name].add(owner)
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_circle_finder_finds_a_circle_behind_a_function_level_import() -> None:
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles() -> None:
    graph = import_graph()
    found = circles(graph)
    described = [
        " -> ".join(c) + f"  ({', '.join(f'{m} imports {sorted(graph[m] & set(c))}' for m in c)})" for c in found
    ]
    assert not found, "import circles:\n" + "\n".join(described)


def test_long_modules_say_why() -> None:
    unexplained = []
    for name, path in _modules().items():
        text = path.read_text(encoding="utf-8")
        if text.count("\n") > LONG:
            doc = ast.get_docstring(ast.parse(text)) or ""
            if "longer than" not in doc.lower():
                unexplained.append(f"{name} ({text.count(chr(10))} lines)")
    assert not unexplained, f"modules over {LONG} lines whose docstring does not say why they are longer: {unexplained}"


def _all_modules() -> list[str]:
    names = []
    for package in PACKAGES:
        module = importlib.import_module(package)
        names.append(package)
        names += [info.name for info in pkgutil.walk_packages(module.__path__, prefix=f"{package}.")]
    return names


@pytest.mark.parametrize("name", _all_modules())
def test_every_exception_class_descends_from_user_error(name: str) -> None:
    try:
        module = importlib.import_module(name)
    except ImportError as exc:  # an optional dependency (vllm, ...) that this machine lacks
        pytest.skip(f"{name} needs {exc.name}")
    strays = [
        cls.__qualname__
        for _, cls in inspect.getmembers(module, inspect.isclass)
        if cls.__module__ == name and issubclass(cls, BaseException) and not issubclass(cls, UserError)
    ]
    assert not strays, f"{name} defines exceptions outside the UserError root: {strays}"


def test_the_run_config_holds_the_judge_settings_with_the_judges_defaults() -> None:
    from engine.config import JUDGE_FIELDS, GenerateConfig, judge_settings
    from engine.records import JudgeSettings

    for field, judge in JUDGE_FIELDS.items():
        assert GenerateConfig.model_fields[field].default == JudgeSettings.model_fields[judge].default, field
    settings = judge_settings(GenerateConfig(out="x", judge_principles=3, judge_cot=True, pairing="final-initial"))
    assert (settings.principles, settings.cot, settings.pairing) == (3, True, "final-initial")
