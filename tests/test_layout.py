"""The house rules (DESIGN §9), read from the code's own import statements, lazy ones included.

- the core (``fitcast/*.py``) imports no component; ``fitcast/cli/`` is the composition root;
- ``client/`` (the player) imports only itself and the core;
- ``server/``, ``nas/``, ``mobile/`` import nothing from ``client/``;
- ``sr_models/`` and ``chunking/`` import only themselves and the core;
- no import cycle between files; ``bench/`` and ``scripts/`` import nothing private.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("fitcast", "client", "server", "sr_models", "chunking", "nas", "mobile")
OWN = set(PACKAGES) | {"bench", "scripts"}


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _files() -> list[Path]:
    return sorted(p for top in OWN for p in (ROOT / top).rglob("*.py") if ".venv" not in p.parts)


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module imported, names taken from it) for every import statement of a file."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.module, [alias.name for alias in node.names]))
    return out


def _own_imports(path: Path) -> set[str]:
    """The project modules a file imports (``from pkg import mod`` counts ``pkg.mod`` when it is one)."""
    known = {_module(p) for p in _files()}
    found = set()
    for module, names in _imports(path):
        if module.split(".")[0] not in OWN:
            continue
        subs = [f"{module}.{n}" for n in names if f"{module}.{n}" in known]
        found |= set(subs) if subs else {module}
    return found


def _layer(module: str) -> str:
    if module.startswith("fitcast.cli") or module == "fitcast.__main__":
        return "fitcast.cli"
    return module.split(".")[0]


ALLOWED = {
    "fitcast": {"fitcast"},
    "client": {"client", "fitcast"},
    "sr_models": {"sr_models", "fitcast"},
    "chunking": {"chunking", "fitcast"},
    "nas": {"nas", "fitcast", "sr_models"},
    "mobile": {"mobile", "fitcast", "sr_models"},
    "server": {"server", "fitcast", "sr_models", "chunking", "nas", "mobile"},
}


def test_every_package_imports_only_what_lies_below_it():
    wrong = []
    for path in _files():
        layer = _layer(_module(path))
        if layer not in ALLOWED:
            continue
        for target in _own_imports(path):
            if _layer(target) not in ALLOWED[layer]:
                wrong.append(f"{path.relative_to(ROOT)} imports {target}")
    assert wrong == []


def test_no_import_cycle_between_files():
    graph = {_module(p): _own_imports(p) for p in _files()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert cycles == []


def test_bench_and_scripts_import_nothing_private():
    private = []
    for top in ("bench", "scripts"):
        for path in (ROOT / top).rglob("*.py"):
            for module, names in _imports(path):
                if module.split(".")[0] in PACKAGES and (
                        any(n.startswith("_") for n in names) or any(p.startswith("_") for p in module.split("."))):
                    private.append(f"{path.relative_to(ROOT)}: {module} {names}")
    assert private == []


def test_the_rules_see_imports():
    """The scan itself finds a lazy import and a violation (so the rules above can fail)."""
    player = _own_imports(ROOT / "client" / "player.py")
    assert "fitcast.upscale" in player and "client.realtime" in player
    assert "server.pipeline" in _own_imports(ROOT / "fitcast" / "cli" / "commands.py")  # lazy, inside a function
    assert _layer("fitcast.cli.doctor") == "fitcast.cli" and _layer("fitcast.grid") == "fitcast"
