"""The package's structure: no import cycles, and knowledge of the model types only inside `ast_dora/models/`.

Both read the source with `ast` (nothing is imported), so they see function-level imports as well as
module-level ones, and they fail on the commit that adds a cycle or a stray model-type comparison.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ast_dora"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(path: Path, modules: dict[str, Path]) -> set[str]:
    """Every module of the package that `path` imports, at module or function level."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            # `from pkg import mod` imports the module pkg.mod; `from mod import name` imports mod.
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for target in targets:
            # `import a.b.c` runs a, a.b and a.b.c; the edge that matters is to the deepest module of ours.
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = package_modules()
    return {name: imported_modules(path, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None. Package `__init__` edges to their own submodules count:
    importing the submodule runs the `__init__` first, but that is an ancestor, not a cycle, so an edge from a
    module to one of its own ancestors is left out."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if node.startswith(target + "."):
                continue
            if state.get(target) == 1:
                return stack[stack.index(target):] + [target]
            if state.get(target) is None:
                cycle = visit(target)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_import_graph_sees_function_level_imports():
    graph = import_graph()
    # training.py imports ast_dora.hub inside a function (the push at the end of a run).
    assert "ast_dora.hub" in graph["ast_dora.training"]
    assert "ast_dora.models.registry" in graph["ast_dora.models"]


def test_find_cycle_finds_a_planted_cycle():
    graph = {"p.a": {"p.b"}, "p.b": {"p.c"}, "p.c": {"p.a"}, "p.d": {"p.a"}}
    assert find_cycle(graph) == ["p.a", "p.b", "p.c", "p.a"]
    assert find_cycle({"p.a": {"p.b"}, "p.b": set()}) is None


def test_ast_dora_has_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


MODEL_TYPE_STRINGS = {"vit_hybrid", "ast_dora"}


def model_type_literals(path: Path) -> list[tuple[int, str]]:
    """String constants equal to a model type, outside imports, logger names and docstrings."""
    tree = ast.parse(path.read_text(), filename=str(path))
    allowed: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == "getLogger":
            allowed.update(id(arg) for arg in node.args)
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                allowed.add(id(first.value))
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and node.value in MODEL_TYPE_STRINGS and id(node) not in allowed
    ]


def test_model_type_literal_check_catches_a_comparison(tmp_path):
    module = tmp_path / "mod.py"
    module.write_text('import logging\nlogger = logging.getLogger("ast_dora")\n\ndef f(t):\n    return t == "ast_dora"\n')
    assert model_type_literals(module) == [(5, "ast_dora")]


@pytest.mark.parametrize("path", [p for p in sorted(PACKAGE.rglob("*.py")) if "models" not in p.relative_to(PACKAGE).parts],
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_model_types_are_known_only_inside_models(path):
    found = model_type_literals(path)
    assert not found, (
        f"{path.relative_to(PACKAGE.parent)} names model types {found}: ask the registry "
        "(ast_dora.models.get_model_spec / spec_for_model) instead."
    )


def test_app_and_entry_point_ask_the_registry_too():
    root = PACKAGE.parent
    for path in (root / "app.py", root / "finetune" / "run.py"):
        assert not model_type_literals(path), path
