"""The paddle versions ppddpm runs on (issue 31): 3.0–3.3 work (`make compat` measures them);
an older paddle is refused in one line naming the versions that work, before anything is loaded.

An old paddle is stood in for by a package `paddle` whose only content is the version file paddle's
build writes (`paddle/version/__init__.py`), first on PYTHONPATH: what ppddpm reads is exactly what
a real paddle 2.6.2 wheel has there (`full_version     = '2.6.2'`).
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ppddpm import _requires

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("version,refused", [("2.6.2", True), ("2.5.0", True), ("1.8.5", True), ("3.0.0", False),
                                             ("3.1.1", False), ("3.3.1", False), ("3.4.0", False),
                                             ("0.0.0", False), (None, False)])
def test_which_versions_are_refused(version, refused):
    line = _requires.problem(version)
    assert (line is not None) == refused
    if refused:
        assert f"paddle {version}" in line and "3.0–3.3" in line and "\n" not in line


def _old_paddle(tmp_path, version="2.6.2") -> dict:
    package = tmp_path / "site" / "paddle"
    (package / "version").mkdir(parents=True)
    (package / "__init__.py").write_text("raise SystemExit('the stand-in paddle was imported')\n")
    (package / "version" / "__init__.py").write_text(f"# THIS FILE IS GENERATED FROM PADDLEPADDLE SETUP.PY\n"
                                                     f"full_version     = '{version}'\nmajor            = '2'\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), str(ROOT)])}


def test_an_old_paddle_is_one_import_error_for_python(tmp_path):
    res = subprocess.run([sys.executable, "-c", "import ppddpm"], capture_output=True, text=True, timeout=60,
                         env=_old_paddle(tmp_path), cwd=tmp_path)
    assert res.returncode == 1
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: this environment has paddle 2.6.2; ppddpm needs paddle 3.0–3.3"), res.stderr


@pytest.mark.parametrize("how", ["module", "script"])
def test_an_old_paddle_is_one_line_and_exit_2_for_the_command_line(tmp_path, how):
    """`python -m ppddpm …` and the `ppddpm` script pip writes (the same two lines as here)."""
    script = tmp_path / "bin" / "ppddpm"
    script.parent.mkdir()
    script.write_text("import sys\nfrom ppddpm.cli.main import main\nsys.exit(main())\n")
    command = [sys.executable, "-m", "ppddpm"] if how == "module" else [sys.executable, str(script)]
    res = subprocess.run(command + ["sample", "--steps", "3"], capture_output=True, text=True, timeout=60,
                         env=_old_paddle(tmp_path), cwd=tmp_path)
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.startswith("ppddpm: error: this environment has paddle 2.6.2; ppddpm needs paddle 3.0–3.3")
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_a_supported_paddle_is_read_without_importing_it(tmp_path):
    env = _old_paddle(tmp_path, "3.1.1")
    res = subprocess.run([sys.executable, "-c", "import ppddpm, sys; print(ppddpm._requires.installed_paddle(), "
                          "'paddle' in sys.modules)"], capture_output=True, text=True, timeout=60, env=env)
    assert res.returncode == 0 and res.stdout.split() == ["3.1.1", "False"], res.stderr
