"""``python -m paratta.tools.layout``: the import graph of ``paratta/`` and ``ui/``, and its rules.

Every ``import`` statement counts, at module level or inside a function (a lazy import that only
dodges a circle is still a circle). An edge goes to the module imported: ``from pkg import name``
points at ``pkg.name`` when that is a module, else at ``pkg`` itself. Rules, each a failure:

1. no circle: the graph has no strongly connected component of more than one module;
2. no circle between packages either: with each module counted as its package (``package``: the
   core, ``paratta.models``, ``paratta.parallel``, ``paratta.tools``; the UI's rooms ``ui.serve``,
   ``ui.view``, ``ui.run``, ``ui.teach`` and ``ui`` itself, the page on top of them), the packages import each
   other one way only; the entry points ``paratta`` (its ``__init__``, which re-exports the public
   names) and ``paratta.__main__`` sit on top and are left out. The core is ``paratta``'s top-level
   modules and ``paratta.planning`` (the solver reads the plan it makes);
3. the library never imports the UI (``ui``, ``gradio``);
4. the core (``paratta.*`` outside ``models``, ``parallel``, ``tools`` and ``__main__``) never imports
   ``paratta.tools``;
5. only ``paratta.tools`` (and ``app``) parse arguments: nothing else imports ``argparse``.

Prints one line per module (``module -> imports``), then the failures; exit status 1 if any.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("paratta", "ui")


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(root: Path = ROOT) -> dict[str, Path]:
    """Every Python module of the packages, by dotted name."""
    return {module_name(p, root): p for pkg in PACKAGES for p in sorted((root / pkg).rglob("*.py"))}


def imports(name: str, path: Path, known: set[str]) -> Iterator[str]:
    """The dotted names ``path`` imports (project modules resolved; others as written)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                full = f"{base}.{alias.name}"
                yield full if full in known else base


def graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Each module's imports: project modules by name, outside packages by their top-level name."""
    found = modules(root)
    known = set(found)
    out = {}
    for name, path in found.items():
        edges = set()
        for target in imports(name, path, known):
            edges.add(target if target in known else target.split(".")[0])
        edges.discard(name)
        out[name] = edges
    return out


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in edges:
                continue
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

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(edges) + 100))
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


SUBPACKAGES = ("models", "parallel", "tools")
ROOMS = ("run", "serve", "view", "teach")  # the UI's folders
ENTRY_POINTS = ("paratta", "paratta.__main__")


def _is_core(name: str) -> bool:
    """The library's core: ``paratta`` and its top-level modules (``__main__``, the CLI's entry, is not)."""
    parts = name.split(".")
    outside = (*SUBPACKAGES, "__main__")
    return parts[0] == "paratta" and (len(parts) == 1 or parts[1] not in outside)


def package(name: str) -> str | None:
    """The package a module counts as in rule 2: ``paratta.models`` …, ``core``, ``ui.run`` …, ``ui``;
    None for an entry point or a module outside the packages."""
    parts = name.split(".")
    if name in ENTRY_POINTS or parts[0] not in PACKAGES:
        return None
    if parts[0] == "paratta":
        return f"paratta.{parts[1]}" if parts[1] in SUBPACKAGES else "core"
    return f"ui.{parts[1]}" if len(parts) > 1 and parts[1] in ROOMS else "ui"


def package_graph(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    """Which package imports which (rule 2), from the module graph."""
    out: dict[str, set[str]] = {}
    for name, targets in edges.items():
        source = package(name)
        if source is None:
            continue
        out.setdefault(source, set())
        out[source] |= {p for t in targets if t in edges and (p := package(t)) not in (None, source)}
    return out


def failures(edges: dict[str, set[str]]) -> list[str]:
    """Every broken rule, one line each (see the module docstring)."""
    out = [f"import circle: {' <-> '.join(c)}" for c in circles(edges)]
    packages = package_graph(edges)
    for circle in circles(packages):
        via = sorted(
            f"{n} -> {t}"
            for n, ts in edges.items()
            for t in ts
            if package(n) in circle and package(t) in circle and package(n) != package(t)
        )
        out.append(f"package circle: {' <-> '.join(circle)} ({'; '.join(via)})")
    for name, targets in sorted(edges.items()):
        library = name.split(".")[0] == "paratta"
        for target in sorted(targets):
            top = target.split(".")[0]
            if library and top in ("ui", "gradio"):
                out.append(f"{name} imports {target}: the library never imports the UI")
            if _is_core(name) and target.startswith("paratta.tools"):
                out.append(f"{name} imports {target}: the core never imports the tools")
            if top == "argparse" and not name.startswith("paratta.tools"):
                out.append(f"{name} imports argparse: only paratta.tools parses arguments")
    return out


def main() -> int:
    edges = graph()
    for name, targets in sorted(edges.items()):
        inside = sorted(t for t in targets if t.split(".")[0] in PACKAGES)
        print(f"{name} -> {', '.join(inside) if inside else '(nothing of paratta or ui)'}")
    broken = failures(edges)
    for line in broken:
        print(f"FAIL: {line}")
    print(f"{len(edges)} modules, {sum(len(v) for v in edges.values())} imports, {len(broken)} failures")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
