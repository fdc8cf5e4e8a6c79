"""The public API a user leans on (issue 31): what `import ppddpm` offers, README's list of it, and
the 0.3 module paths that still import.

The oracles are outside the code under test: CHANGELOG.md's 0.3 → 0.4 table, the names the 0.3
modules defined (tests/data/api-0.3.json, read with `ast` from the 0.3.0 commit), README as committed,
and a fresh interpreter's `sys.modules`.
"""
import importlib
import importlib.util
import inspect
import os
import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import ppddpm

ROOT = Path(__file__).resolve().parent.parent
_OLD = json.loads((Path(__file__).parent / "data" / "api-0.3.json").read_text())
OLD_API, OLD_PARAMETERS = _OLD["modules"], _OLD["parameters"]
# 0.3 names that went in 0.4 without a successor to forward to (CHANGELOG 0.4.0 says so)
GONE = {"ppddpm.step_variants": {"BUILTIN"},                  # now `get_variant(name).builtin`
        # 0.5 (issue 30): pictures read the run file, nothing rebuilds a run's scheduler; the recorder's latent
        # hook is `LatentSupport`, the seam of `ppddpm.core.support`, another interface
        "ppddpm.samplers": {"rebuild_scheduler"}, "ppddpm.latent": {"LatentRun"}}


def _changelog_moves():
    """(0.3 path, 0.4 path) rows of CHANGELOG.md's 0.4.0 table."""
    text = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8").split("## 0.4.0")[1].split("\n## ")[0]
    return re.findall(r"^\| `(ppddpm\.[\w.]+)` \| `(ppddpm\.[\w.]+)` \|$", text, re.M)


MOVES = _changelog_moves()
LIVE = {"ppddpm.cli"}          # a 0.3 module that is a package of the same name since 0.4 (its main: ppddpm.cli.main)
SCRIPT = {"ppddpm._launched"}  # a rank's script, started by `ppddpm --nproc` as the file ppddpm/cli/_launched.py


def _forget(old: str) -> None:
    """As if `old` had never been imported in this process (other tests may have), its new module kept."""
    sys.modules.pop(old, None)


def _deprecations(record) -> list:
    return [str(w.message) for w in record if issubclass(w.category, DeprecationWarning)]


def test_the_changelog_table_is_the_whole_0_3_list():
    assert len(MOVES) == 30 and set(dict(MOVES)) == set(OLD_API)


@pytest.mark.parametrize("old,new", [m for m in MOVES if m[0] not in LIVE | SCRIPT])
def test_a_0_3_module_path_is_the_new_module_and_warns_once_naming_it(old, new):
    _forget(old)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        first = importlib.import_module(old)
        exec(f"import {old}\nfrom {old} import *", {})          # the import statement, twice more
        again = importlib.import_module(old)
    messages = _deprecations(record)
    assert len(messages) == 1 and f"{old} moved to {new}" in messages[0], messages
    assert first is again is importlib.import_module(new) is sys.modules[old]


def test_the_three_forms_of_the_0_3_readme_work():
    """`import ppddpm.plotting`, `from ppddpm.plotting import plot_grid`, `ppddpm.plotting.plot_grid`
    (0.3's README: `ppddpm.plotting.plot_grid(traj)`, `ppddpm.plotting.explore(traj)`)."""
    _forget("ppddpm.plotting")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        import ppddpm.plotting
        from ppddpm.plotting import plot_grid
        assert ppddpm.plotting.plot_grid is plot_grid is ppddpm.pictures.plotting.plot_grid is ppddpm.plot_grid
        assert ppddpm.plotting.explore is ppddpm.pictures.explorer.explore
    assert len(_deprecations(record)) == 2                      # the module path, then `explore`'s new home


def test_the_0_3_verify_module_path_leaves_ppddpm_verify_the_function():
    _forget("ppddpm.verify")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import ppddpm.verify
        from ppddpm.verify import VerifyReport
    assert ppddpm.verify is ppddpm.analysis.verify.verify and callable(ppddpm.verify)
    assert VerifyReport is ppddpm.VerifyReport and sys.modules["ppddpm.verify"] is ppddpm.analysis.verify


def test_the_0_3_cli_module_is_the_cli_package_with_its_entry_point():
    from ppddpm.cli.main import main

    assert importlib.import_module("ppddpm.cli").__path__        # the package, as `import ppddpm.cli` finds it
    assert dict(MOVES)["ppddpm.cli"] == "ppddpm.cli.main" and callable(main)


@pytest.mark.parametrize("old", sorted(m for m, _ in MOVES if m not in LIVE | SCRIPT))
def test_every_name_a_0_3_module_defined_is_still_there_or_says_where_it_went(old):
    """Each public name of the 0.3 module: found on the old path, as the object of the new one; or,
    where it left that module, with one DeprecationWarning naming its home, which holds that object."""
    module = importlib.import_module(old) if old in sys.modules else _quietly(old)
    for name in OLD_API[old]:
        if name in GONE.get(old, ()):
            assert not hasattr(module, name)
            continue
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            value = getattr(module, name)
        messages = _deprecations(record)
        assert _binds_a_0_3_call(value, OLD_PARAMETERS[old].get(name)), (old, name)
        if name in vars(module):
            assert not messages, (old, name, messages)
            continue
        home = re.fullmatch(rf"{re.escape(old)}\.{name} is ([\w.]+) since 0\.4: .*", messages[0] if messages else "")
        assert len(messages) == 1 and home, (old, name, messages)
        where, _, new_name = home.group(1).rpartition(".")
        assert getattr(importlib.import_module(where), new_name) is value


def _binds_a_0_3_call(value, parameters) -> bool:
    """A 0.3 function's parameters are the first of the object's now (0.4 only appended some)."""
    if parameters is None:
        return True                                   # a class or a constant
    now = [("*" if p.kind == p.VAR_POSITIONAL else "**" if p.kind == p.VAR_KEYWORD else "") + p.name
           for p in inspect.signature(value).parameters.values()]
    return now[:len(parameters)] == parameters


def _quietly(old):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return importlib.import_module(old)


def test_a_deprecation_is_attributed_to_the_line_that_named_the_old_path(tmp_path):
    """Python shows a DeprecationWarning by default only where it is attributed to `__main__`: a
    script's own line, not the import machinery's."""
    script = tmp_path / "old.py"
    script.write_text("import ppddpm\nimport ppddpm.plotting\nppddpm.models\n")
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                         env={**_env(), "PYTHONWARNINGS": ""})
    assert res.returncode == 0, res.stderr
    lines = [line for line in res.stderr.splitlines() if "DeprecationWarning" in line]
    assert [line.split(": DeprecationWarning")[0] for line in lines] == [f"{script}:2", f"{script}:3"], res.stderr


def test_an_old_path_warns_from_the_prompt_too():
    """`python -c`, stdin and the REPL run `__main__` with no source file: the warning is shown all the same
    (0.5.0's first cut raised ImportError there, from the warning's look-up of its source line)."""
    code = "import ppddpm.plotting\nprint(ppddpm.plotting.plot_grid.__module__)\n"
    for argv, stdin in (([sys.executable, "-c", code], None), ([sys.executable, "-"], code)):
        res = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=300,
                             env={**_env(), "PYTHONWARNINGS": ""})
        assert res.returncode == 0 and res.stdout.strip() == "ppddpm.pictures.plotting", res.stderr
        assert "DeprecationWarning: ppddpm.plotting moved to ppddpm.pictures.plotting" in res.stderr, res.stderr


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def test_import_ppddpm_is_cheap():
    """No paddle, ppdiffusers, matplotlib or numpy until a name is used; the 0.3 finder included."""
    code = ("import sys, ppddpm; heavy = ('paddle', 'ppdiffusers', 'matplotlib', 'numpy'); "
            "print(sorted(m for m in heavy if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=_env())
    assert res.returncode == 0 and res.stdout.strip() == "[]", res.stdout + res.stderr


def test_every_public_name_is_listed_in_readme_with_its_signature():
    """README's api block is what docs/readme_blocks.py makes of `ppddpm.__all__` now."""
    spec = importlib.util.spec_from_file_location("readme_blocks", ROOT / "docs" / "readme_blocks.py")
    blocks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(blocks)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert blocks.block("api", readme) == blocks.render_api()
    assert all(f"| `ppddpm.{name}` |" in readme for name in ppddpm.__all__)
