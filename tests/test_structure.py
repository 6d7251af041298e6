"""The package's shape (DESIGN.md §1): imports point one way, and what the restructure promised.

The import graph is built from the source with ``ast`` (module-level and function-level imports
and ``importlib.import_module`` with a literal name), so an import hidden inside a function
counts as much as one at the top.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "autokd"

# DESIGN.md §1, lowest first; a module imports only from its own or lower layers
LAYERS: dict[str, int] = {
    "autokd": 0, "autokd.__main__": 7, "autokd._api": 0, "autokd._io": 0, "autokd.errors": 0,
    "autokd.config": 0, "autokd.metrics": 0, "autokd.registry": 0, "autokd.pareto": 0,
    "autokd.device": 0, "autokd.progress": 0, "autokd.paired": 0, "autokd.inference": 0,
    "autokd.data": 1, "autokd.data.text": 1, "autokd.data.tokenize": 1,
    "autokd.models": 1, "autokd.models.transformer": 1, "autokd.distill": 1,
    "autokd.distill.transformer": 1, "autokd.distill.init": 1,
    "autokd.train": 2, "autokd.train_state": 2, "autokd.train_taps": 2, "autokd.evaluation": 2,
    "autokd.replay": 2, "autokd.train_unlabeled": 2,
    "autokd.cost": 2, "autokd.quant": 2,
    "autokd.latency_table": 2, "autokd.latency_model": 2, "autokd.block_latency": 2, "autokd.model_files": 2,
    "autokd.teachers": 3, "autokd.hf_teacher": 3, "autokd.space": 3, "autokd.pipeline": 3,
    "autokd.datafree": 3,
    "autokd.objective": 4, "autokd.study": 4, "autokd.record": 4, "autokd.front": 4,
    "autokd.scale": 4, "autokd.chains": 4,
    "autokd.tables": 4, "autokd.artifacts": 4, "autokd.checkpoints": 4,
    "autokd.runner": 5, "autokd.controllers": 5, "autokd.nas": 5, "autokd.search": 5, "autokd.kd_gain": 5,
    "autokd.workers": 5, "autokd.pool": 5, "autokd.runtime_front": 5,
    "autokd.report": 6, "autokd.export": 6,
    "autokd.cli": 7,
}
OPTUNA_FROM_LAYER = 4  # nothing below the objective/study layer imports Optuna


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _resolve(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, path: Path) -> set[str]:
    """Every name ``module`` imports (absolute), third-party ones included."""
    base = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            root = node.module or ""
            if node.level:
                root = ".".join(base.split(".")[: len(base.split(".")) - node.level + 1]
                                + ([node.module] if node.module else []))
            # ``from pkg import submodule`` depends on the submodule, not on pkg/__init__
            out |= {f"{root}.{a.name}" if f"{root}.{a.name}" in MODULES else root
                    for a in node.names}
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant)):
            out.add(str(node.args[0].value))
    return out


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        targets = {_resolve(n) for n in _imports(module, path) if n.startswith("autokd")}
        graph[module] = {t for t in targets if t and t != module}
    return graph


def _layer(module: str) -> int:
    name = module
    while name not in LAYERS:
        name = name.rpartition(".")[0]
    return LAYERS[name]


def test_every_module_has_a_layer() -> None:
    for module in MODULES:
        assert _layer(module) is not None, module


def test_the_import_graph_has_no_cycle() -> None:
    graph, done, path = _graph(), set(), []

    def visit(node: str) -> None:
        if node in path:
            cycle = path[path.index(node):] + [node]
            pytest.fail("import cycle: " + " -> ".join(cycle))
        if node in done:
            return
        path.append(node)
        for nxt in sorted(graph[node]):
            visit(nxt)
        path.pop()
        done.add(node)

    for module in sorted(graph):
        visit(module)


def test_imports_point_down_the_layers() -> None:
    wrong = [f"{m} (layer {_layer(m)}) imports {t} (layer {_layer(t)})"
             for m, targets in _graph().items() for t in targets if _layer(t) > _layer(m)]
    assert not wrong, "\n".join(wrong)


def test_optuna_only_from_the_study_layer_up() -> None:
    wrong = [m for m, path in MODULES.items() if _layer(m) < OPTUNA_FROM_LAYER
             and any(n == "optuna" or n.startswith("optuna.") for n in _imports(m, path))]
    assert not wrong, f"import optuna below layer {OPTUNA_FROM_LAYER}: {wrong}"


def test_optional_extras_are_imported_lazily() -> None:
    """``tokenizers`` / ``transformers`` (extras text, hf) only inside functions, so that
    autokd works without them and says which extra to install when one is needed."""
    lazy = ("tokenizers", "transformers")
    wrong = [m for m, path in MODULES.items()
             for node in ast.parse(path.read_text()).body
             if isinstance(node, (ast.Import, ast.ImportFrom))
             for name in ([a.name for a in node.names] if isinstance(node, ast.Import)
                          else [node.module or ""])
             if name.split(".")[0] in lazy]
    assert not wrong, f"import these lazily, inside the functions that need them: {wrong}"


def test_import_autokd_is_cheap_and_the_api_is_lazy() -> None:
    code = ("import sys, autokd; heavy = [m for m in ('torch', 'optuna', 'pandas') "
            "if m in sys.modules]; print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == ""


def test_api_names_stay_callable_whichever_module_loads_first() -> None:
    import autokd
    import autokd.export  # imports autokd.report on the way
    import autokd.search

    for name, function in (("search", "search"), ("report", "build_report"),
                           ("export", "export_student")):
        api = getattr(autokd, name)
        assert callable(api), name
        assert api.__api__ is getattr(api, function)
    assert autokd.load_student is autokd.export.load_student


def test_the_largest_module_stays_readable() -> None:
    sizes = {m: len(p.read_text().splitlines()) for m, p in MODULES.items()}
    too_big = {m: n for m, n in sizes.items() if n > 450}
    assert not too_big, f"split these along their sections: {too_big}"
