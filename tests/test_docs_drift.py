"""Every generated number in README, docs/figures and the notebooks still follows from the code.

`make docs` (docs/make_docs.py) commits each section of numbers at its full setting and, as the JSON's
`check`, at a short setting; here the short setting is computed again — in a fresh interpreter, with
the thread count `make docs` used (docs/drift.py says why it matters) — and compared number by number.
A failure names each number and says what to run. The other tests show that a planted drift of one
number is caught: in a JSON's check, in a README block, in README's prose, in a notebook's output.
"""
import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "docs"))
import drift  # noqa: E402
import readme_blocks  # noqa: E402
import sections  # noqa: E402

SECTIONS = ["figures", "equivalence", "quality", "verify", "ddim", "facts"]


def committed(name):
    return json.loads((sections.FIGURES / f"{name}.json").read_text(encoding="utf-8"))


def test_every_section_keeps_the_check_ci_computes_again():
    for name in SECTIONS:
        data = committed(name)
        assert "check" in data and data["made_by"]["threads"] == int(drift.THREADS), name


@pytest.mark.xdist_group("docs-drift")
def test_every_generated_number_follows_from_the_code(tmp_path):
    """The short setting of every section, computed now, against the committed check."""
    out = tmp_path / "short.json"
    env = dict(os.environ, OMP_NUM_THREADS=drift.THREADS, PPDDPM_PROGRESS="0")
    run = subprocess.run([sys.executable, str(ROOT / "docs" / "make_docs.py"), "--short", str(out)], env=env,
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    now = json.loads(out.read_text(encoding="utf-8"))
    assert sorted(now) == sorted(SECTIONS)
    found = {name: drift.differences(committed(name)["check"], now[name]) for name in SECTIONS}
    problems = [drift.describe(f"docs/figures/{name}.json", f) for name, f in found.items() if f]
    assert not problems, "\n".join(problems)


def test_a_planted_drift_in_a_check_is_named():
    data = committed("equivalence")["check"]
    planted = copy.deepcopy(data)
    planted["findings"][3]["steps_with_clipping"] += 1
    planted["findings"][3]["direct"]["final_psnr_db"][0] = (planted["findings"][3]["direct"]["final_psnr_db"][0]
                                                            or 100.0) * 0.99
    found = drift.differences(data, planted)
    assert [path for path, _, _ in found] == ["findings[3].steps_with_clipping", "findings[3].direct.final_psnr_db[0]"]
    assert "findings[3].steps_with_clipping: committed" in drift.describe("equivalence.json", found)
    assert drift.differences(data, copy.deepcopy(data)) == []


def test_the_tolerances_let_rounding_noise_move_but_not_a_formula():
    assert drift.differences({"max_abs_prev": 7.5e-05}, {"max_abs_prev": 8.8e-05}) == []     # kernels, threads
    assert drift.differences({"max_abs_prev": 7.5e-05}, {"max_abs_prev": 7.5e-03}) != []     # a formula
    assert drift.differences({"confidence": 0.971}, {"confidence": 0.9712}) == []
    assert drift.differences({"confidence": 0.971}, {"confidence": 0.975}) != []
    assert drift.differences({"steps_departing": 48}, {"steps_departing": 49}) != []
    assert drift.differences({"x": float("nan")}, {"x": 1.0}) != []                           # NaN never agrees
    assert drift.differences({"x": 1.0}, {"x": float("nan")}) != []
    assert drift.differences({"ok": True}, {"ok": False}) != []
    assert drift.differences({"a": 1}, {"a": 1, "b": 2}) == [("b", "<absent>", 2)]
    assert drift.differences({"title": "x_t every 50 in t"}, {"title": "x_t every 28 in t"}) != []


def test_a_planted_drift_in_a_readme_block_or_its_prose_is_named():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert readme_blocks.stale_blocks(readme) == []
    table = readme_blocks.block("verify-table", readme)
    row = next(line for line in table.splitlines() if line.startswith("| ddpm |"))
    number = re.findall(r"\| ([0-9.e+-]+) \| holds", row)[0]
    planted = readme.replace(row, row.replace(f"| {number} | holds", f"| {float(number) * 2:.2g} | holds"))
    assert [name for name, _ in readme_blocks.stale_blocks(planted)] == ["verify-table"]
    inline = next(readme_blocks.INLINE.finditer(readme))
    planted = readme.replace(inline.group(0), inline.group(0).replace(f"-->{inline['value']}<!--", "-->9.99<!--"))
    stale = readme_blocks.stale_blocks(planted)
    assert len(stale) == 1 and inline["path"] in stale[0][0]


def test_a_planted_drift_in_a_notebook_output_is_named():
    path = sorted((ROOT / "notebooks").glob("*.ipynb"))[1]
    nb = nbformat.read(path, as_version=4)
    as_run = copy.deepcopy(nb)                    # what a fresh PPDDPM_FAST=1 run prints when nothing drifted
    for cell in as_run.cells:
        if cell.cell_type == "code":
            kept = "\n".join(cell.metadata[drift.FAST_KEY])
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=kept)]
    assert drift.notebook_differences(nb, as_run) == []
    k, cell = next((k, c) for k, c in enumerate(c for c in as_run.cells if c.cell_type == "code")
                   if re.search(r"\d\.\d", "".join(c.outputs[0].text)))
    text = "".join(cell.outputs[0].text)
    number = re.search(r"\d+\.\d+", text).group(0)
    cell.outputs[0].text = text.replace(number, str(round(float(number) * 1.5 + 1, 3)), 1)
    found = drift.notebook_differences(nb, as_run)
    assert len(found) == 1 and found[0][0].startswith(f"cell {k}")


def test_notebook_outputs_carry_this_version():
    import ppddpm

    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        shown = "".join(drift.cell_text(next(c for c in nb.cells if c.cell_type == "code").outputs))
        assert f"ppddpm {ppddpm.__version__}" in shown, f"{path.name}: outputs made by another version; make docs"
