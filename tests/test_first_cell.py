"""The notebooks' first cell, as a newcomer meets it: a fresh environment without ppddpm, the
notebook uploaded alone (a copy outside the repository), one run of the cell.

The fresh venv sees this environment's packages (paddle, ppdiffusers, ipykernel …) through a
.pth line — as AI Studio has paddle preinstalled — but not ppddpm, whose editable install lives
in .pth files that a plain path entry does not read.
"""
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def fresh_kernel(tmp_path, monkeypatch):
    venv = tmp_path / "fresh"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    Path(purelib, "borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    check = subprocess.run([str(python), "-c", "import importlib.util as u; print(u.find_spec('ppddpm') is None, "
                                               "u.find_spec('paddle') is not None)"],
                           capture_output=True, text=True, cwd=tmp_path)
    assert check.stdout.split() == ["True", "True"], check      # paddle visible, ppddpm not
    spec = tmp_path / "jupyter" / "kernels" / "fresh"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "fresh", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return python, Path(purelib)


def test_first_cell_installs_and_imports_in_one_go(tmp_path, fresh_kernel, monkeypatch):
    python, purelib = fresh_kernel
    paddle_before = subprocess.run([str(python), "-c", "import paddle; print(paddle.__version__, paddle.__file__)"],
                                   capture_output=True, text=True).stdout
    alone = tmp_path / "uploaded"
    alone.mkdir()
    shutil.copy(ROOT / "notebooks" / "01_forward_process.ipynb", alone)         # the notebook alone
    monkeypatch.setenv("PPDDPM_SOURCE", str(ROOT))                             # "a path the user sets"
    monkeypatch.setenv("PPDDPM_FAST", "1")
    nb = nbformat.read(alone / "01_forward_process.ipynb", as_version=4)
    NotebookClient(nb, timeout=900, kernel_name="fresh", resources={"metadata": {"path": str(alone)}}).execute()
    first = next(c for c in nb.cells if c.cell_type == "code")
    text = "".join(o.get("text", "") for o in first.outputs if o.output_type == "stream")
    assert f"ppddpm: installed from {ROOT}" in text and "device:" in text, text
    assert "PPDDPM_MODEL=google/ddpm-celebahq-256" in text          # the model switch, named where it is seen
    assert not any(o.output_type == "error" for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    # installed into the fresh environment, and the preinstalled paddle left exactly as it was
    assert any(p.name.startswith(("__editable__", "ppddpm")) for p in purelib.iterdir())
    assert not any(p.name.startswith("paddlepaddle") for p in purelib.iterdir())
    assert subprocess.run([str(python), "-c", "import paddle; print(paddle.__version__, paddle.__file__)"],
                          capture_output=True, text=True).stdout == paddle_before
    # a second run of the cell (the next session) finds it installed
    again = subprocess.run([str(python), "-c", "import ppddpm; print(ppddpm.__file__)"], capture_output=True,
                           text=True, cwd=tmp_path, env={**os.environ, "PYTHONNOUSERSITE": "1"})
    assert again.returncode == 0 and str(ROOT) in again.stdout, again.stderr
