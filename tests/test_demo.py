"""`make demo` (ppddpm demo): the README's first command, end to end on the bundled model.

It prints README's equivalence rows for its own setting; at 20 steps those are the rows `make docs`
computed as its check (docs/figures/equivalence.json's `check`), so the demo and README cannot drift apart.
"""
import json
import sys
from pathlib import Path

import numpy as np

import ppddpm
from ppddpm.analysis.findings import equivalence_table
from ppddpm.cli.demo import run_demo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "docs"))
import drift  # noqa: E402


def test_demo_writes_the_articles_pictures_and_an_ab_summary(tmp_path):
    result = run_demo(tmp_path, steps=20, quiet=True)
    names = {p.name for p in result["written"]}
    assert {"trajectory.npz", "sample.png", "grid_x_t.png", "grid_x0.png", "trajectory.png", "ab_clip_on.png",
            "ab_clip_on.json", "ab_summary.txt"} <= names
    assert all((tmp_path / n).stat().st_size > 0 for n in names)
    lines = (tmp_path / "ab_summary.txt").read_text().splitlines()
    assert lines == equivalence_table(result["findings"]) == result["ab"]
    off, on = result["findings"]
    assert off["direct"]["equivalent"] and not on["direct"]["equivalent"]
    # README's table at the demo's setting: the rows make docs computed (its check) are the demo's rows
    check = json.loads((ROOT / "docs" / "figures" / "equivalence.json").read_text())["check"]["findings"]
    published = [r for r in check if (r["steps"], r["variance_type"], r["mode"]) == (20, "fixed_small", "free")]
    assert drift.differences(published, result["findings"]) == []
    assert np.isfinite(ppddpm.Trajectory.load(tmp_path / "trajectory.npz").prev_sample).all()
