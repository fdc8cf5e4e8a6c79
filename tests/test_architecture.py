"""The package's shape (issue #22): short functions, imports only downward through the layers and
never in a cycle, the numpy-only references.

Measured with `ast` on the source files, not with anything ppddpm itself computes.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "ppddpm"
README = PACKAGE.parent / "README.md"
MAX_FUNCTION_LINES = 60
LAYERS = ("core", "variants", "pipelines", "storage", "analysis", "pictures", "cli", "model", "reference")
# What each layer may import besides itself and the package's base modules (errors.py, _io.py, _progress.py,
# _lazy.py, the package's __init__): only layers below it. README's Architecture section has this table.
MAY_IMPORT = {
    "reference": set(),
    "storage": {"reference"},
    "core": {"storage"},
    "variants": {"core", "storage"},
    "pipelines": {"core", "storage"},
    "model": {"pipelines", "core", "storage"},
    "analysis": {"model", "pipelines", "variants", "core", "storage", "reference"},
    "pictures": {"model", "pipelines", "core", "storage", "reference"},
    "cli": {"pictures", "analysis", "model", "pipelines", "variants", "core", "storage", "reference"},
}


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        yield name, path, ast.parse(path.read_text(), str(path))


def _imported(name, path, node, known) -> set:
    """The ppddpm modules an import statement of module `name` (file `path`) names."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name.startswith("ppddpm")}
    if not isinstance(node, ast.ImportFrom):
        return set()
    base = node.module or ""
    if node.level:                       # relative: from the module's package (a package's __init__: itself)
        anchor = (name if path.name == "__init__.py" else name.rsplit(".", 1)[0]).split(".")
        anchor = anchor[:len(anchor) - (node.level - 1)]
        base = ".".join(anchor + ([base] if base else []))
    if not base.startswith("ppddpm"):
        return set()
    return {base} | {f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known}


def _module_level_imports(name, path, tree, known):
    """ppddpm modules `name` imports when it is imported (not inside functions, not under TYPE_CHECKING)."""
    found = set()
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        nodes = [node] + (list(ast.walk(node)) if isinstance(node, (ast.If, ast.Try, ast.With)) else [])
        for n in nodes:
            found |= _imported(name, path, n, known)
    return {m for m in found if m in known}


def _layer(module: str):
    """The layer of a module (`ppddpm.core.recorder` → "core"); None for the package's base modules."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in MAY_IMPORT) else None


def test_every_import_between_layers_goes_down_as_the_table_says():
    """Every import (at module level or inside a function, lazy or not) from one layer into another is
    one MAY_IMPORT allows: no arrow from core to pipelines or pictures, none from storage upward."""
    known = {name for name, _, _ in _modules()}
    wrong = []
    for name, path, tree in _modules():
        here = _layer(name)
        for node in ast.walk(tree):
            for target in _imported(name, path, node, known | {name.split(".")[0]}):
                there = _layer(target)
                if here is not None and there is not None and there != here and there not in MAY_IMPORT[here]:
                    wrong.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {here} → {there} "
                                 f"({ast.unparse(node)})")
    assert not wrong, "imports against the layer table:\n" + "\n".join(wrong)


def test_the_layer_table_is_the_one_in_readme():
    """README's Architecture section lists, per layer, what it may import: the same as MAY_IMPORT."""
    text = README.read_text(encoding="utf-8")
    table = {}
    for layer, imports in re.findall(r"^\| `(\w+)/` \| ([^|]*) \|$", text.split("## Architecture", 1)[1], re.M):
        table[layer] = set(re.findall(r"`(\w+)/`", imports))
    assert table == MAY_IMPORT


def test_the_layer_test_sees_a_wrong_arrow(tmp_path, monkeypatch):
    """The check above can fail: a module of core importing pipelines is reported."""
    fake = tmp_path / "ppddpm"
    (fake / "core").mkdir(parents=True)
    (fake / "core" / "bad.py").write_text("from ppddpm.pipelines import recording\n")
    monkeypatch.setitem(globals(), "PACKAGE", fake)
    with pytest.raises(AssertionError, match=r"core/bad.py:1 core → pipelines"):
        test_every_import_between_layers_goes_down_as_the_table_says()


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
    paths = {name: path for name, path, _ in _modules()}
    graph = {name: _module_level_imports(name, paths[name], tree, modules) - {name} for name, tree in modules.items()}
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
