"""`make demo` (ppddpm demo): the README's first command, end to end on the bundled model."""
import numpy as np

import ppddpm
from ppddpm.cli.demo import VARIANTS, run_demo


def test_demo_writes_the_articles_pictures_and_an_ab_summary(tmp_path):
    result = run_demo(tmp_path, steps=20, quiet=True)
    names = {p.name for p in result["written"]}
    assert {"trajectory.npz", "sample.png", "grid_x_t.png", "grid_x0.png", "trajectory.png", "ab_clip_on.png",
            "ab_clip_on.json", "ab_summary.txt"} <= names
    assert all((tmp_path / n).stat().st_size > 0 for n in names)
    lines = (tmp_path / "ab_summary.txt").read_text().splitlines()
    direct_off = next(line for line in lines if line.startswith("clip_sample=False") and " direct " in line)
    direct_on = next(line for line in lines if line.startswith("clip_sample=True ") and " direct " in line)
    assert "equivalent=True" in direct_off and "equivalent=False" in direct_on
    # the same configuration as README's table gives the same number
    report = ppddpm.compare(ppddpm.load_pipeline(), VARIANTS, seed=777, num_inference_steps=20, mode="free",
                            clip_sample=False)
    assert f"max|Δx_t-1|={report.summary()['direct']['max_abs_prev']:.2e}" in direct_off
    assert np.isfinite(ppddpm.Trajectory.load(tmp_path / "trajectory.npz").prev_sample).all()
