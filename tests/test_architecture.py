"""The layer rule and the absence of import cycles, checked on the source by an AST walk.

Layers (docs/architecture.md): core (`densekit/`: errors, settings, data, models, encoder,
rerankers, fusion, runs) <- index <- eval <- training; the service uses only core and
index; the CLI, the benchmarks and the demo sit on top of everything. Every import counts,
also one inside a function (a cycle hidden there is still a cycle); only imports under
`if TYPE_CHECKING:` are skipped, since they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import densekit

# Where each part of the installed package lives in the repository.
PACKAGE_DIRS = {
    "densekit": Path(densekit.__file__).resolve().parent,
}
for _sub in ("eval", "index", "service", "training"):
    PACKAGE_DIRS[f"densekit.{_sub}"] = Path(__import__(f"densekit.{_sub}", fromlist=["_"]).__file__).resolve().parent

TOP = ("densekit.cli", "densekit.bench", "densekit.demo", "densekit.pipeline")
ALLOWED = {
    "core": {"core"},
    "index": {"core", "index"},
    "eval": {"core", "index", "eval"},
    "training": {"core", "index", "eval", "training"},
    "service": {"core", "index", "service"},
    "top": {"core", "index", "eval", "training", "service", "top"},
}


def layer_of(module: str) -> str:
    for top in TOP:
        if module == top or module.startswith(top + "."):
            return "top"
    for sub in ("index", "eval", "training", "service"):
        pkg = f"densekit.{sub}"
        if module == pkg or module.startswith(pkg + "."):
            return sub
    return "core"


def source_modules() -> dict[str, Path]:
    """Module name -> file, for every module of the installed package."""
    found: dict[str, Path] = {}
    for pkg, folder in PACKAGE_DIRS.items():
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            name = ".".join([pkg, *parts])
            if pkg == "densekit" and parts and parts[0] in ("eval", "index", "service", "training"):
                continue  # not a real subfolder of densekit/ (mapped elsewhere)
            found[name] = path
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(module: str, path: Path, known: set[str]) -> set[str]:
    """The densekit modules `module` imports (a `from pkg import sub` names the submodule)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            skip.update(id(n) for b in node.body for n in ast.walk(b))
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "densekit" or alias.name.startswith("densekit."):
                    out.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_pkg else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not (target == "densekit" or target.startswith("densekit.")):
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                out.add(sub if sub in known else target)
    return {m for m in out if m != module}


def import_graph() -> dict[str, set[str]]:
    mods = source_modules()
    known = set(mods)
    return {m: {t for t in imports_of(m, p, known) if t in known} for m, p in mods.items()}


def test_the_source_walk_sees_every_part_of_the_package():
    mods = source_modules()
    for name in (
        "densekit.cli.main",
        "densekit.eval.suite",
        "densekit.index.dense_index",
        "densekit.service.app",
        "densekit.training.biencoder",
        "densekit.rerankers.llm",
    ):
        assert name in mods, name
    graph = import_graph()
    assert "densekit.index.dense_index" in graph["densekit.eval.evaluate"] or any(
        t.startswith("densekit.index") for t in graph["densekit.eval.evaluate"]
    )


def test_layers_point_one_way():
    bad = []
    for src, targets in sorted(import_graph().items()):
        for dst in sorted(targets):
            if layer_of(dst) not in ALLOWED[layer_of(src)]:
                bad.append(f"{src} ({layer_of(src)}) -> {dst} ({layer_of(dst)})")
    assert not bad, "forbidden imports:\n" + "\n".join(bad)


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_no_import_cycles_not_even_inside_functions():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


@pytest.mark.parametrize(
    "graph, expect",
    [
        ({"a": {"b"}, "b": {"a"}}, [["a", "b"]]),
        ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
    ],
)
def test_cycle_finder_finds_a_cycle(graph, expect):
    assert find_cycles(graph) == expect


def test_layer_checker_flags_a_service_to_eval_arrow():
    assert layer_of("densekit.eval.rerank") not in ALLOWED[layer_of("densekit.service.routes.search")]
    assert layer_of("densekit.fusion") in ALLOWED[layer_of("densekit.service.routes.search")]
