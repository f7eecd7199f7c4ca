"""The import graph of fib_runtime has no circle (function-level imports included), neither
between modules nor between packages, and no layer reaches into what it must not."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Source folders and the package each one is importable as.
PACKAGES = {"fib_runtime": "fib_runtime", "adapters": "fib_runtime.adapters"}


def module_files(root: Path = REPO) -> dict[str, Path]:
    found = {}
    for folder_name, package in PACKAGES.items():
        folder = root / folder_name
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


def imports_of(path: Path, module: str, known: set[str]) -> set[str]:
    """The project modules a file imports, anywhere in it (an import inside a function
    counts: it is a dependency all the same)."""
    is_package = path.name == "__init__.py"
    targets = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, base]) if base else ".".join(anchor)
            for alias in node.names:
                child = f"{base}.{alias.name}"
                targets.add(child if child in known else base)
    return {t for t in targets if t in known and t != module}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle of the graph, as a path that ends where it starts, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def graph(root: Path = REPO) -> dict[str, set[str]]:
    """Module -> the project modules it imports, for the checkout at `root`."""
    files = module_files(root)
    return {name: imports_of(path, name, set(files)) for name, path in files.items()}


def test_no_import_circle_in_the_package() -> None:
    cycle = find_cycle(graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_the_checker_finds_a_circle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def package_of(module: str) -> str:
    """The layer a module belongs to: the first level under fib_runtime (the root module
    `fib_runtime` is its own), each adapter (`fib_runtime.adapters.<x>`) one of its own."""
    parts = module.split(".")
    depth = 3 if parts[:2] == ["fib_runtime", "adapters"] else 2
    return ".".join(parts[:depth])


def package_graph(modules: dict[str, set[str]]) -> dict[str, set[str]]:
    """Package -> the other packages its modules import."""
    found: dict[str, set[str]] = {}
    for module, targets in modules.items():
        edges = found.setdefault(package_of(module), set())
        edges.update(package_of(t) for t in targets)
        edges.discard(package_of(module))
    return found


def test_no_import_circle_between_packages() -> None:
    cycle = find_cycle(package_graph(graph()))
    assert cycle is None, "package circle: " + " -> ".join(cycle or [])


def test_the_package_graph_joins_modules_by_package() -> None:
    modules = {"fib_runtime.store.db": {"fib_runtime.trust.memory"},
               "fib_runtime.trust.policy": {"fib_runtime.catalogue"},
               "fib_runtime.catalogue": {"fib_runtime.store"},
               "fib_runtime.adapters.vllm.plugin": {"fib_runtime.adapters.routing"}}
    packages = package_graph(modules)
    assert packages["fib_runtime.adapters.vllm"] == {"fib_runtime.adapters.routing"}
    assert find_cycle(packages) == ["fib_runtime.catalogue", "fib_runtime.store",
                                    "fib_runtime.trust", "fib_runtime.catalogue"]


# (importer prefix, imported prefix, why not): the store records, trust decides, the
# catalogue knows what it ships; capture and dispatch see the store only through its face.
FORBIDDEN = [
    ("fib_runtime.store", "fib_runtime.trust", "the store records; trust decides"),
    ("fib_runtime.store", "fib_runtime.catalogue", "the store knows nothing it ships"),
    ("fib_runtime.catalogue", "fib_runtime.trust", "the catalogue does not decide trust"),
    ("fib_runtime.capture", "fib_runtime.store.", "capture uses `fib_runtime.store` only"),
    ("fib_runtime.dispatch", "fib_runtime.store.", "dispatch uses `fib_runtime.store` only"),
    ("fib_runtime.dispatch", "fib_runtime.capture", "dispatch never imports capture"),
]


def forbidden_edges(modules: dict[str, set[str]]) -> list[str]:
    found = []
    for source, target, why in FORBIDDEN:
        found += [f"{m} -> {t} ({why})" for m, targets in sorted(modules.items())
                  if _under(m, source) for t in sorted(targets) if _under(t, target)]
    return found


def _under(module: str, prefix: str) -> bool:
    """`prefix` itself or a module inside it; a prefix ending in "." only modules inside."""
    return module.startswith(prefix) if prefix.endswith(".") else (
        module == prefix or module.startswith(prefix + "."))


def test_no_forbidden_import() -> None:
    assert forbidden_edges(graph()) == []


def test_the_forbidden_edges_are_found() -> None:
    modules = {"fib_runtime.store.db": {"fib_runtime.trust.memory"},
               "fib_runtime.capture.writer": {"fib_runtime.store", "fib_runtime.store.layout"},
               "fib_runtime.dispatch.runtime": {"fib_runtime.store", "fib_runtime.storey"},
               "fib_runtime.catalogue": {"fib_runtime.trust"}}
    assert [e.split(" (")[0] for e in forbidden_edges(modules)] == [
        "fib_runtime.store.db -> fib_runtime.trust.memory",
        "fib_runtime.catalogue -> fib_runtime.trust",
        "fib_runtime.capture.writer -> fib_runtime.store.layout"]



# The packages in layers, lowest first: a package imports only from its own layer or lower
# ones (and the package graph has no circle, above). A new package must be given a layer.
LAYERS = [
    ("base", {"errors", "version", "regimes", "paths", "config_fields", "files", "render",
              "cuda_graphs", "hardware", "triton_launch"}),
    ("format", {"schema", "tensors", "keys", "original", "families"}),
    ("records and measuring", {"store", "build", "ranking", "measure"}),
    ("what ships and what is trusted", {"catalogue", "engine_ops", "trust"}),
    ("serving", {"dispatch", "capture"}),
    ("offline", {"retuning", "report", "verify"}),
    ("entry points", {"autostart", "", "demo", "cli", "adapters"}),
]


def layer_of(package: str) -> int:
    """The index in LAYERS of a package (`fib_runtime` itself is "", every adapter
    "adapters"); -1 when no layer names it."""
    name = package.removeprefix("fib_runtime").removeprefix(".")
    name = "adapters" if name.startswith("adapters") else name
    return next((i for i, (_, names) in enumerate(LAYERS) if name in names), -1)


def upward_imports(packages: dict[str, set[str]]) -> list[str]:
    found = []
    for package, targets in sorted(packages.items()):
        found += [f"{package} -> {t} ({LAYERS[layer_of(t)][0]} above "
                  f"{LAYERS[layer_of(package)][0]})" for t in sorted(targets)
                  if layer_of(t) > layer_of(package)]
    return found


def test_every_package_has_a_layer() -> None:
    packages = package_graph(graph())
    assert [p for p in sorted(packages) if layer_of(p) < 0] == []


def test_no_import_from_a_lower_layer_to_a_higher_one() -> None:
    assert upward_imports(package_graph(graph())) == []


def test_an_upward_import_is_found() -> None:
    packages = {"fib_runtime.store": {"fib_runtime.trust", "fib_runtime.schema"},
                "fib_runtime.dispatch": {"fib_runtime.store"}}
    assert upward_imports(packages) == [
        "fib_runtime.store -> fib_runtime.trust (what ships and what is trusted above "
        "records and measuring)"]
