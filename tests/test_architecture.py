"""The package's shape: layers that import only downwards, no import cycle, short modules and
functions (benchmarks/ too), no private name imported from another module, and a README module
map that matches the tree. Every import counts, deferred ones too."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "paddleqa"
BENCHMARKS = ROOT / "benchmarks"

# Each layer may import itself and the layers listed after it, never one above.
LAYERS = {
    "cli": ("autocompress", "pipeline", "service", "stages", "runtime", "text", "models", "core"),
    "autocompress": ("pipeline", "stages", "runtime", "text", "models", "core"),
    "pipeline": ("service", "stages", "runtime", "text", "models", "core"),
    "service": ("runtime", "text", "models", "core"),
    "stages": ("runtime", "text", "models", "core"),
    "runtime": ("text", "models", "core"),
    "text": ("core",),
    "models": ("core",),
    "core": (),
}
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80


def _modules() -> dict[str, Path]:
    mods = {}
    for path in sorted(PKG.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """paddleqa modules that ``name`` imports anywhere in its file (module top or deferred)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [module] + [f"{module}.{a.name}" for a in node.names]
        else:
            continue
        found |= {t for t in targets if t in known and t != name}
    return found


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "paddleqa"


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {name: _imports(name, path, set(mods)) for name, path in mods.items()}


def test_no_import_cycle():
    graph = _graph()
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_layers_import_only_downwards():
    wrong = []
    for name, targets in _graph().items():
        layer = _layer(name)
        if layer not in LAYERS:
            continue  # the package root (paddleqa/__init__.py)
        for t in targets:
            t_layer = _layer(t)
            if t_layer != layer and t_layer in LAYERS and t_layer not in LAYERS[layer]:
                wrong.append(f"{name} ({layer}) imports {t} ({t_layer})")
    assert not wrong, "imports that go up or sideways:\n" + "\n".join(wrong)


def test_every_module_sits_in_a_layer():
    strays = [m for m in _modules() if _layer(m) not in LAYERS and m != "paddleqa"]
    assert not strays, f"modules outside the layers {sorted(LAYERS)}: {strays}"


def test_modules_and_functions_are_short():
    long_modules, long_functions = [], []
    for path in [*_modules().values(), *sorted(BENCHMARKS.glob("*.py"))]:
        text = path.read_text(encoding="utf-8")
        if len(text.splitlines()) > MAX_MODULE_LINES:
            long_modules.append(f"{path.relative_to(ROOT)}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long_functions.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {n} lines")
    assert not long_modules, f"modules over {MAX_MODULE_LINES} lines: {long_modules}"
    assert not long_functions, f"functions over {MAX_FUNCTION_LINES} lines: {long_functions}"


def test_no_private_name_is_imported_from_another_module():
    """A name with a leading underscore is its module's own: another file that needs it gets a
    public name (package code, benchmarks and tests alike)."""
    found = []
    for path in [*_modules().values(), *sorted(BENCHMARKS.glob("*.py")), *sorted((ROOT / "tests").glob("*.py"))]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                found += [f"{path.relative_to(ROOT)}:{node.lineno} imports {a.name} from {node.module}"
                          for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
    assert not found, "private names imported from another module:\n" + "\n".join(found)


def test_readme_module_map_matches_the_tree():
    """README's module map lists every package and module, and nothing that is not there."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Module map", 1)[1].split("\n## ", 1)[0]
    listed = set()
    for row in re.findall(r"^\| `paddleqa/([\w/]*)` \| ([^|]*) \|", section, re.M):
        package, modules = row[0].rstrip("/"), re.findall(r"`(\w+)`", row[1])
        listed |= {f"{package}/{m}" if package else m for m in modules}
    actual = set()
    for name in _modules():
        parts = name.split(".")[1:]
        if not parts:
            continue
        if (PKG.joinpath(*parts) / "__init__.py").exists():
            continue  # a package: its row in the map lists its modules
        actual.add("/".join(parts))
    assert listed == actual, (f"in the tree but not in README's module map: {sorted(actual - listed)}; "
                              f"in the map but not in the tree: {sorted(listed - actual)}")
