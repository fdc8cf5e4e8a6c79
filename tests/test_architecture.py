"""The package's shape (issue #22): short functions, no import cycles, the numpy-only references.

Measured with `ast` on the source files, not with anything ppddpm itself computes.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "ppddpm"
MAX_FUNCTION_LINES = 60
LAYERS = ("core", "variants", "pipelines", "storage", "analysis", "pictures", "cli", "model", "reference")


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        yield name, path, ast.parse(path.read_text(), str(path))


def _module_level_imports(name, tree, known):
    """ppddpm modules `name` imports when it is imported (not inside functions, not under TYPE_CHECKING)."""
    package = name if any(p.name == "__init__.py" for p in []) else name.rsplit(".", 1)[0]
    found = set()
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        nodes = [node] + (list(ast.walk(node)) if isinstance(node, (ast.If, ast.Try, ast.With)) else [])
        for n in nodes:
            if isinstance(n, ast.Import):
                found |= {a.name for a in n.names if a.name.startswith("ppddpm")}
            elif isinstance(n, ast.ImportFrom):
                base = n.module or ""
                if n.level:
                    anchor = package.split(".")
                    anchor = anchor[:len(anchor) - (n.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                if not base.startswith("ppddpm"):
                    continue
                found.add(base)
                found |= {f"{base}.{a.name}" for a in n.names if f"{base}.{a.name}" in known}
    return {m for m in found if m in known}


def test_every_function_in_the_package_is_at_most_60_lines():
    long = []
    for name, path, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name} ({length} lines)")
    assert not long, "functions longer than 60 lines:\n" + "\n".join(long)


def test_no_import_cycle_among_the_package_modules():
    modules = {name: tree for name, _, tree in _modules()}
    graph = {name: _module_level_imports(name, tree, modules) - {name} for name, tree in modules.items()}
    # a package imports its own __init__ first; that edge is not a cycle
    for name in graph:
        graph[name] = {m for m in graph[name] if not name.startswith(m + ".")}
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_package_is_laid_out_in_its_layers():
    top = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert set(LAYERS) <= top
    loose = sorted(p.name for p in PACKAGE.glob("*.py")
                   if p.name not in ("__init__.py", "__main__.py", "errors.py", "_io.py", "_progress.py", "_lazy.py",
                                     "_moved.py", "_requires.py"))
    assert not loose, f"modules outside the layers: {loose}"


@pytest.mark.parametrize("name", ["ppddpm.reference"])
def test_the_references_import_nothing_but_numpy_and_the_standard_library(name):
    import sys

    allowed = set(sys.stdlib_module_names) | {"numpy", "ppddpm"}
    for mod, path, tree in _modules():
        if not mod.startswith(name):
            continue
        for node in ast.walk(tree):
            roots = []
            if isinstance(node, ast.Import):
                roots = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                roots = [(node.module or "").split(".")[0]]
            for root in roots:
                assert root in allowed, f"{path.name} imports {root}"
                if root == "ppddpm":
                    assert (node.module or "").startswith("ppddpm.reference"), f"{path.name}: {ast.unparse(node)}"


# imported where used: paddle + ppdiffusers take ~8 s to import, the others load native libraries or
# plotting backends; `ppddpm --help`, `ppddpm view` and `ppddpm.reference` must not pay for them
HEAVY = {"paddle", "ppdiffusers", "paddlenlp", "matplotlib", "PIL", "sklearn", "scipy", "safetensors", "IPython",
         "tqdm", "selenium", "hypothesis"}


def test_imports_are_at_module_level_unless_heavy_or_marked_lazy():
    """An import inside a function is one of the heavy libraries above, or carries `# lazy: <why>`."""
    hidden = []
    for name, path, tree in _modules():
        lines = path.read_text().splitlines()
        for func in ast.walk(tree):
            if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(func):
                if not isinstance(node, (ast.Import, ast.ImportFrom)):
                    continue
                module = node.names[0].name if isinstance(node, ast.Import) else (node.module or "")
                if not getattr(node, "level", 0) and module.split(".")[0] in HEAVY:
                    continue
                if "# lazy:" in lines[node.lineno - 1] or "# lazy:" in lines[node.end_lineno - 1]:
                    continue
                hidden.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {ast.unparse(node)}")
    assert not hidden, (f"{len(hidden)} imports inside functions without `# lazy: <why>`:\n" +
                        "\n".join(sorted(set(hidden))))
