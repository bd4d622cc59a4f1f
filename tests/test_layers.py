"""The package's shape: sub-packages in layers, imports flowing down, no circle, small files.

Read from the source (every import, including those inside functions and under
``TYPE_CHECKING``), so a wrong-way import fails here even where it would only run late.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The distribution's folders and the import names they hold.
FOLDERS = {"core": "prunetune", "plugins": "prunetune.plugins", "search_spaces": "prunetune.search_spaces"}

# Lowest first: a module may import its own layer and those below it, never one above.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "files"),
    ("host",),
    ("structure",),
    ("components",),
    ("training",),
    ("student",),
    ("results",),
    ("jobs",),
    ("searching",),
    ("api", "cli", "testing", "__init__", "__main__"),
)
# What a plugin may import: the package's root (``hookimpl``) and these layers.
PLUGIN_LAYERS = ("errors", "files", "host", "structure", "components")
MAX_LINES = 400


def _module_name(path: Path) -> str:
    folder, *rest = path.relative_to(ROOT).with_suffix("").parts
    parts = [FOLDERS[folder], *rest]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _sources() -> Iterator[Path]:
    for folder in FOLDERS:
        yield from sorted((ROOT / folder).rglob("*.py"))


def _imports(path: Path) -> set[str]:
    """The ``prunetune`` modules ``path`` imports (``from a import b`` counts as ``a.b`` where
    ``a.b`` is a module, else as ``a``)."""
    modules = set(MODULES)
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "prunetune"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "prunetune":
            subs = {f"{node.module}.{a.name}" for a in node.names} & modules
            found |= subs or {node.module}
    return found


MODULES = {_module_name(p): p for p in _sources()}
GRAPH = {name: _imports(path) for name, path in MODULES.items()}


def _layer(module: str) -> int:
    """The layer of a core module (``prunetune.<sub-package or module>...``)."""
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "__init__"
    for index, names in enumerate(LAYERS):
        if top in names:
            return index
    raise AssertionError(f"{module} is in no layer: add its sub-package to LAYERS")


def _is_plugin(module: str) -> bool:
    return module.startswith(("prunetune.plugins", "prunetune.search_spaces"))


CORE = sorted(m for m in MODULES if not _is_plugin(m))
PLUGINS = sorted(m for m in MODULES if _is_plugin(m))


@pytest.mark.parametrize("module", CORE)
def test_core_imports_flow_down_and_never_reach_the_plugins(module: str) -> None:
    wrong = sorted(i for i in GRAPH[module] if _is_plugin(i) or _layer(i) > _layer(module))
    assert not wrong, f"{module} (layer {_layer(module)}) imports upwards or into the plugins: {wrong}"


@pytest.mark.parametrize("module", PLUGINS)
def test_plugins_import_only_the_public_layers_below_the_jobs(module: str) -> None:
    allowed = {LAYERS.index(layer) for layer in LAYERS if set(layer) & set(PLUGIN_LAYERS)}
    folder = module.rsplit(".", 1)[0]
    wrong = []
    for imported in sorted(GRAPH[module]):
        private = any(part.startswith("_") for part in imported.split(".")[1:])
        if _is_plugin(imported):
            if private and imported.rsplit(".", 1)[0] != folder:
                wrong.append(imported)  # another folder's private helpers
        elif imported != "prunetune" and (private or _layer(imported) not in allowed):
            wrong.append(imported)
    assert not wrong, f"{module} imports beyond {', '.join(PLUGIN_LAYERS)}: {wrong}"


def test_no_import_circle() -> None:
    # Tarjan's strongly connected components over every import, lazy ones included.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in GRAPH.get(node, ()):
            if nxt not in GRAPH:
                continue
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in sorted(GRAPH):
        if node not in index:
            visit(node)
    assert not circles, f"modules that import each other: {circles}"


def _all_python() -> Iterator[Path]:
    """Every Python file of the project: the package, its tests, benchmarks and scripts."""
    skip = {"build", "dist", "runs", "node_modules"}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT).parts[:-1]
        if not any(part.startswith(".") or part in skip for part in parts):
            yield path


@pytest.mark.parametrize("path", list(_all_python()), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_file_over_400_lines(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(ROOT)} has {lines} lines: split it by what its parts do"


def test_the_checks_see_a_wrong_way_import(tmp_path: Path) -> None:
    source = tmp_path / "bad.py"
    source.write_text("def f():\n    from prunetune.searching.run import run_search\n")
    assert _imports(source) == {"prunetune.searching.run"}
    assert _layer("prunetune.searching.run") > _layer("prunetune.structure.plan")


def test_only_the_candidate_spells_parameter_names() -> None:
    """``ratio:<group>`` and ``kernel:<conv>`` are written and read by
    :class:`~prunetune.components.spaces.Candidate` (and its ``ratio_param``/``kernel_param``)
    alone: no other module handles the prefixes."""
    owner = ROOT / "core" / "components" / "spaces.py"
    spelled = [str(path.relative_to(ROOT)) for path in _sources() if path != owner
               and any(name in path.read_text(encoding="utf-8") for name in ("RATIO_PREFIX", "KERNEL_PREFIX"))]
    assert not spelled, f"modules that spell parameter names themselves: {spelled}"
