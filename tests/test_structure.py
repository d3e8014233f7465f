"""The library's structure: layers, no import cycle, short functions.

Every import between tweakflow modules is read from the source (function
bodies included): a module may import only modules of its own layer or of
a lower one, the graph has no cycle, and a tweakflow module is never
imported inside a function (such imports hide cycles).
"""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "tweakflow"

#: Layers, lowest first: foundation, fan-out (per image), gather (alignment),
#: scatter (outputs), report, orchestration.
LAYERS = [
    {"tweakflow", "errors", "atomic", "params", "config", "geometry", "results", "fitting", "callogs"},
    {"grouping", "io", "detection", "catalogs", "refcat", "inputs", "synthetic", "entries"},
    {"quality", "ordering", "align", "absolute", "pairs", "globalsolve"},
    {"fitspatch", "wcs_update", "transfer"},
    {"metrics", "qa", "verdict"},
    {"console", "jobhost", "steps", "steps.jobs", "steps.fanout", "steps.gather", "steps.scatter", "steps.report", "steps.mosaic", "steps.transfer"},
]

#: Generators of synthetic data: one long recipe each, read top to bottom.
LONG_FUNCTIONS_ALLOWED = {("synthetic", "make_dataset"), ("synthetic", "make_fits_dataset"), ("synthetic", "make_catalog_mosaic")}

MAX_FUNCTION_LINES = 80


def _module_name(path):
    rel = path.relative_to(PACKAGE).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts) or "tweakflow"


def _modules():
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(module, node):
    """Names of the tweakflow modules an import statement of ``module`` imports."""
    if isinstance(node, ast.Import):
        return [a.name.removeprefix("tweakflow.") or "tweakflow" for a in node.names if a.name.split(".")[0] == "tweakflow"]
    if node.level == 0:
        if not (node.module or "").startswith("tweakflow"):
            return []
        base = node.module.removeprefix("tweakflow").lstrip(".")
    else:
        package = module.split(".")[:-1] if module != "tweakflow" else []
        if _modules()[module].name == "__init__.py":
            package = module.split(".") if module != "tweakflow" else []
        package = package[: len(package) - (node.level - 1)] if node.level > 1 else package
        base = ".".join(package + ([node.module] if node.module else []))
    known = _modules()
    out = []
    for alias in node.names:
        sub = f"{base}.{alias.name}" if base else alias.name
        out.append(sub if sub in known else (base or "tweakflow"))
    return out


def _imports():
    """{module: [(imported module, line, inside a function)]}."""
    graph = {}
    for module, path in _modules().items():
        tree = ast.parse(path.read_text())
        local = set()
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                local.update(id(n) for n in ast.walk(fn) if isinstance(n, (ast.Import, ast.ImportFrom)))
        edges = []
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                edges.extend((target, node.lineno, id(node) in local) for target in _resolve(module, node) if target != module)
        graph[module] = edges
    return graph


def _label(module):
    return "tweakflow" if module == "tweakflow" else f"tweakflow.{module}"


def _layer(module):
    for n, layer in enumerate(LAYERS):
        if module in layer:
            return n
    raise AssertionError(f"tweakflow.{module} is in no layer: add it to LAYERS in tests/test_structure.py")


def test_every_module_has_a_layer():
    for module in _modules():
        _layer(module)


def test_no_upward_import():
    upward = [
        f"{_label(m)} (line {line}) imports {_label(t)}"
        for m, edges in _imports().items()
        for t, line, _ in edges
        if _layer(t) > _layer(m)
    ]
    assert not upward, "imports from a higher layer:\n" + "\n".join(upward)


def test_no_function_local_import_of_the_package():
    local = [f"{_label(m)} (line {line}) imports {_label(t)} inside a function" for m, edges in _imports().items() for t, line, inside in edges if inside]
    assert not local, "\n".join(local)


def test_no_import_cycle():
    graph = {m: sorted({t for t, _, _ in edges}) for m, edges in _imports().items()}
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for t in graph.get(m, []):
            if state.get(t) == "open":
                cycle = stack[stack.index(t) :] + [t]
                pytest.fail("import cycle: " + " -> ".join(_label(c) for c in cycle))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = "done"

    for m in graph:
        if m not in state:
            visit(m)


def test_functions_are_short():
    long = []
    for module, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES and (module, node.name) not in LONG_FUNCTIONS_ALLOWED:
                    long.append(f"tweakflow.{module}.{node.name}: {n} lines")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(long)


def test_the_checker_sees_relative_and_local_imports(tmp_path):
    """The import reader resolves ``from ..x import y`` in a subpackage and
    flags an import inside a function (the checks above rely on both)."""
    edges = {t: inside for t, _, inside in _imports()["steps.gather"]}
    assert edges.get("align") is False and edges.get("results") is False
    tree = ast.parse("def f():\n    from .align import relative_align\n")
    fn = tree.body[0]
    node = fn.body[0]
    assert _resolve("absolute", node) == ["align"]
