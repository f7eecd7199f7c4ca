"""Counts of a checkout's import graph, as tests/test_imports.py sees it (function-level
imports included): modules, edges, module and package circles, imports from a lower layer
to a higher one and forbidden module edges (as this repository's tests define them; a package
no layer names is listed as such).

Usage: python scripts/import_graph.py [CHECKOUT]   (default: this one)
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.test_imports import (
    REPO,
    find_cycle,
    forbidden_edges,
    graph,
    layer_of,
    package_graph,
    upward_imports,
)


def main() -> None:
    root = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else REPO
    modules = graph(root)
    packages = package_graph(modules)
    print(f"checkout: {root}")
    print(f"modules: {len(modules)}, edges: {sum(len(t) for t in modules.values())}")
    print(f"a module circle: {find_cycle(modules) or 'none'}")
    print(f"a package circle: {find_cycle(packages) or 'none'}")
    print(f"packages without a layer: {[p for p in sorted(packages) if layer_of(p) < 0]}")
    for line in upward_imports({p: {t for t in ts if layer_of(t) >= 0}
                                for p, ts in packages.items() if layer_of(p) >= 0}):
        print(f"upward import: {line}")
    for line in forbidden_edges(modules):
        print(f"forbidden import: {line}")


if __name__ == "__main__":
    main()
