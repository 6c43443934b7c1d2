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
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names
            ]
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
                return stack[stack.index(target) :] + [target]
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
        if (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) == "getLogger"
        ):
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
    module.write_text(
        'import logging\nlogger = logging.getLogger("ast_dora")\n\ndef f(t):\n    return t == "ast_dora"\n'
    )
    assert model_type_literals(module) == [(5, "ast_dora")]


@pytest.mark.parametrize(
    "path",
    [p for p in sorted(PACKAGE.rglob("*.py")) if "models" not in p.relative_to(PACKAGE).parts],
    ids=lambda p: str(p.relative_to(PACKAGE)),
)
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


# ---- backends: one home each ------------------------------------------------------------------------------------

# The packages a backend runs on: imported only by its module in ast_dora/backends/. `hardware.py` measures
# engines' bf16 speed (torch's and OpenVINO's matmul probe) and `benchmarks/` their matmul peaks: they time the
# runtimes themselves, not a backend.
BACKEND_RUNTIMES = {"onnxruntime", "openvino", "nncf"}
RUNTIME_MEASURERS = ("hardware.py", "benchmarks")


def backend_names() -> set[str]:
    from ast_dora.backends import backend_names

    return set(backend_names())


def backend_name_comparisons(path: Path, names: set[str]) -> list[tuple[int, str]]:
    """Comparisons of something called `backend` (a variable, an attribute) with a backend's name: the code that
    asks "which backend?" instead of asking the registry."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if not isinstance(node, ast.Compare):
            continue
        sides = [node.left, *node.comparators]
        named = any(
            "backend" in (getattr(side, "id", None) or getattr(side, "attr", None) or "") for side in sides
        )
        constants = [c.value for side in sides for c in ast.walk(side) if isinstance(c, ast.Constant)]
        found += [(node.lineno, value) for value in constants if named and value in names]
    return found


def runtime_imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        names = (
            [a.name for a in node.names]
            if isinstance(node, ast.Import)
            else ([node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
        )
        found += [(node.lineno, name) for name in names if name.split(".")[0] in BACKEND_RUNTIMES]
    return found


def test_backend_checks_catch_a_comparison_and_a_runtime_import(tmp_path):
    module = tmp_path / "mod.py"
    module.write_text('import openvino\n\ndef f(args):\n    return args.backend in ("onnx", "x")\n')
    assert backend_name_comparisons(module, backend_names()) == [(4, "onnx")]
    assert runtime_imports(module) == [(1, "openvino")]


OUTSIDE_BACKENDS = [
    p
    for p in [*sorted(PACKAGE.rglob("*.py")), PACKAGE.parent / "app.py"]
    if "backends" not in p.relative_to(PACKAGE.parent).parts
]


@pytest.mark.parametrize("path", OUTSIDE_BACKENDS, ids=lambda p: str(p.relative_to(PACKAGE.parent)))
def test_backends_are_known_only_inside_backends(path):
    assert not backend_name_comparisons(path, backend_names()), (
        f"{path.relative_to(PACKAGE.parent)} compares a backend with a backend's name: ask the registry "
        "(ast_dora.backends.get_backend(name).exported, .calibrated, ...) instead."
    )
    relative = path.relative_to(PACKAGE.parent).parts
    if not any(part in RUNTIME_MEASURERS for part in relative):
        assert not runtime_imports(path), (
            f"{path.relative_to(PACKAGE.parent)} imports a backend's runtime: only its module in "
            "ast_dora/backends/ does."
        )


def test_every_registered_backend_provides_the_interface():
    """Adding a backend is one module and one `register_backend` line: each registered one fills in what the rest
    of the project asks of it (docs/architecture.md, "How to add a backend")."""
    import inspect

    from ast_dora.backends import AUTO_ORDER, Backend, exported_backends, get_backend, upload_patterns
    from ast_dora.backends import backend_names as registered

    names = registered()
    assert names[0] == "torch" and len(set(names)) == len(names)
    for name in names:
        backend = get_backend(name)
        assert isinstance(backend, Backend) and backend.name == name and backend.runtime
        assert type(backend).load_runner is not Backend.load_runner, f"{name} has no load_runner"
        module = inspect.getmodule(type(backend))
        assert module.__name__ == f"ast_dora.backends.{name}", "one module per backend, named after it"
        if backend.exported:
            assert type(backend).export is not Backend.export, f"{name} exports nothing"
            assert backend.files and set(backend.auto_rank) == set(backend.files) and backend.upload_patterns
            assert upload_patterns()[backend.subfolder] == backend.upload_patterns
            assert all((name, precision) in AUTO_ORDER for precision in backend.files)
    ranks = [get_backend(name).auto_rank[precision] for name, precision in AUTO_ORDER]
    assert ranks == sorted(ranks) and len(AUTO_ORDER) == sum(len(b.files) for b in exported_backends())


def test_each_spec_names_its_configs_model_type():
    """The specs name config.json's model_type as a string (importing a transformers config class imports torch);
    it must be the config class's."""
    from ast_dora.models import get_model_spec, model_types

    for model_type in model_types():
        spec = get_model_spec(model_type)
        assert spec.model_class.config_class.model_type == spec.hf_model_type, model_type
