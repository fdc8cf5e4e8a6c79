"""README's pictures of a real run, the equivalence table and the sample scores: three sections of `make docs`.

    make docs                                  # every section (docs/make_docs.py)
    .venv/bin/python docs/make_docs.py figures equivalence quality     # these three

- `figures`: seed 777 on the bundled model — the article's grids of x_t and x̂_0, the aligned rows, the
  forward process, the schedule, an animation and the explorer at t = 500 (1000 steps; SHORT: 20);
- `equivalence`: the DDPM routes against the stock step, 16 settings (docs/figures/equivalence.json;
  SHORT: 20 steps), and the direct route's final PSNR over 32 seeds (SHORT: 2);
- `quality`: the bundled model's digit scores, n = 256 samples at 1000 steps (SHORT: 16 at 20 steps).
`quality` accepts the samples of an earlier `ppddpm eval --n 256 --steps 1000 --out DIR`
(`--samples-from=DIR`), the same draws, instead of drawing them again.
"""
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

import ppddpm
import readme_blocks
from ppddpm.analysis import metrics
from ppddpm.analysis.findings import EQUIVALENCE_VARIANTS, equivalence_finding
from ppddpm.core.config import with_config
from ppddpm.pictures import explorer, plotting
from sections import FULL, Section, figure_text

SAMPLES_FROM = [a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--samples-from=")]


def _picture(pictures, name):
    return None if pictures is None else Path(pictures) / name


def explorer_screenshot(traj, path):
    """README's picture of the explorer: the page of `traj`, scrubbed to t = 500, shot by headless
    Debian chromium (skipped, with a line, where chromium is not installed)."""
    chromium = shutil.which("chromium")
    if not chromium:
        print("explorer screenshot skipped: apt-get install chromium")
        return
    with tempfile.TemporaryDirectory() as tmp:
        page = explorer.explore(traj).save(Path(tmp) / "view.html")
        i = int(np.argmin(np.abs(traj.timesteps - 500)))
        page.write_text(page.read_text().replace("show(0);\n</script>", f"show({i});\n</script>"))
        subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={path}",
                        "--window-size=1240,720", page.as_uri()], check=True, capture_output=True, timeout=120)


def figures(setting, pictures=None) -> dict:
    """The pictures of seed 777's run, and their words (titles, labels)."""
    steps = 1000 if setting == FULL else 20
    pipe = ppddpm.load_pipeline()
    traj = ppddpm.sample_trajectory(pipe, seed=777, num_inference_steps=steps, every=1)
    words = {
        "grid_x_t": figure_text(plotting.plot_grid(traj, "prev_sample", save=_picture(pictures, "grid_x_t.png"))),
        "grid_x0": figure_text(plotting.plot_grid(traj, "pred_original_sample",
                                                  save=_picture(pictures, "grid_x0.png"))),
        "trajectory": figure_text(plotting.plot_trajectory(traj, save=_picture(pictures, "trajectory.png"))),
        "forward": figure_text(plotting.plot_forward("digit", pipe.scheduler, every=steps // 20,
                                                     save=_picture(pictures, "forward.png"))),
        "schedule": figure_text(plotting.plot_schedule(pipe.scheduler, save=_picture(pictures, "schedule.png")))}
    if pictures is not None:
        explorer_screenshot(ppddpm.sample_trajectory(pipe, seed=777, num_inference_steps=steps, every=10,
                                                     fields="all"), Path(pictures) / "explorer.png")
        plotting.animate(ppddpm.sample_trajectory(pipe, seed=777, num_inference_steps=steps, every=20),
                         Path(pictures) / "reverse_777.gif", mp4=False)
    return {"seed": 777, "steps": steps, "figures": words}


def equivalence(setting, pictures=None) -> dict:
    """The DDPM routes against the stock step at 1000 and 50 steps (SHORT: 20), both σ_t², both modes,
    clipping off and on; and the direct route's final PSNR over 32 seeds (SHORT: 2)."""
    pipe = ppddpm.load_pipeline()
    findings, words = [], {}
    settings = (1000, 50) if setting == FULL else (20,)
    for steps in settings:
        for vt in ("fixed_small", "fixed_large"):
            pipe.scheduler = with_config(pipe.scheduler, variance_type=vt)
            for mode in ("shadow", "free"):
                for clip in (False, True):
                    r = ppddpm.compare(pipe, EQUIVALENCE_VARIANTS, seed=777, num_inference_steps=steps, mode=mode,
                                       clip_sample=clip)
                    findings.append(equivalence_finding(r, vt))
                    if steps == settings[0] and vt == "fixed_small" and clip:         # README's two A/B pictures
                        words[f"ab_direct_{mode}"] = figure_text(
                            plotting.plot_ab(r, "direct", save=_picture(pictures, f"ab_direct_{mode}.png")))
    pipe.scheduler = with_config(pipe.scheduler, variance_type="fixed_small")
    seeds, steps = (32, 1000) if setting == FULL else (2, 20)
    many = ppddpm.compare(pipe, ["posterior", "direct"], seed=list(range(seeds)), num_inference_steps=steps,
                          mode="free", clip_sample=True)
    return {"findings": findings, "free_seeds": seeds, "free_seeds_steps": steps,
            "free_seeds_direct_psnr_db": many.summary()["direct"]["final_psnr_db"], "figures": words}


def quality(setting, pictures=None) -> dict:
    """The bundled model's scores: n = 256 samples at 1000 steps (SHORT: 16 at 20), seeds 0…n−1 in batches
    of 64 as `ppddpm eval` draws them, against as many real held-out digits."""
    n, steps = (256, 1000) if setting == FULL else (16, 20)
    if SAMPLES_FROM and setting == FULL:     # an earlier `ppddpm eval --n 256 --steps 1000 --seed 0 --out DIR`
        x = np.load(Path(SAMPLES_FROM[0]) / "samples.npz")["samples"]
        if len(x) != n:
            raise SystemExit(f"{SAMPLES_FROM[0]} holds {len(x)} samples, not {n}")
    else:
        x = metrics.sample_images(ppddpm.load_pipeline(), n=n, seed=0, num_inference_steps=steps, batch_size=64)
    _, accuracy = metrics.classifier()
    if pictures is not None:
        plotting.contact_sheet(x[:64], ncols=16, save=Path(pictures) / "samples.png")
    return {"steps": steps, "samples": metrics.score(x).as_dict(), "real_same_n": metrics.real_ceiling(
        min(n, 359), resolution=8).as_dict(), "real_all_held_out": metrics.real_ceiling(resolution=8).as_dict(),
        "classifier_accuracy": accuracy, "coverage": metrics.digit_coverage(x)}


SECTIONS = [
    Section("figures", figures, writer="docs/make_figures.py"),
    Section("equivalence", equivalence, writer="docs/make_figures.py",
            blocks={"equivalence-table": readme_blocks.render_equivalence,
                    "equivalence-summary": readme_blocks.render_equivalence_summary}),
    Section("quality", quality, writer="docs/make_figures.py", blocks={"quality-table": readme_blocks.render_quality}),
]
