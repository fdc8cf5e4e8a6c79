"""Regenerate README's figures and tables from a real run of the bundled model.

    make figures      # = .venv/bin/python docs/make_figures.py   (about 35 minutes on 2 CPU cores)

Writes docs/figures/*.png, docs/figures/equivalence.json (the A/B findings) and
docs/figures/quality.json (the digit scores, n = 256 samples), fills README's tables from them
(docs/readme_blocks.py), then runs docs/verify_findings.py and docs/ddim_findings.py (`--no-ddim`
skips the latter).
`--samples-from=DIR` scores the samples a `ppddpm eval --n 256 --steps 1000 --out DIR` of the bundled
model saved (the same draws, seeds 0–255) instead of drawing them again.
"""
import json

import numpy as np
import sys
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")
import ppddpm  # noqa: E402
from ppddpm.analysis import metrics  # noqa: E402
from ppddpm.pictures import explorer, plotting  # noqa: E402
from ppddpm.core.config import with_config  # noqa: E402

OUT = Path(__file__).resolve().parent / "figures"
sys.path.insert(0, str(OUT.parent))           # readme_blocks, ddim_findings


def explorer_screenshot(traj, path=OUT / "explorer.png"):
    """README's picture of the explorer: the page of `traj`, scrubbed to t = 500, shot by headless
    Debian chromium (skipped, with a line, where chromium is not installed)."""
    import shutil
    import subprocess
    import tempfile

    chromium = shutil.which("chromium")
    if not chromium:
        print("explorer screenshot skipped: apt-get install chromium")
        return
    with tempfile.TemporaryDirectory() as tmp:
        page = explorer.explore(traj).save(Path(tmp) / "view.html")
        i = int(np.argmin(np.abs(traj.timesteps - 500)))
        text = page.read_text().replace("show(0);\n</script>", f"show({i});\n</script>")
        page.write_text(text)
        subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={path}",
                        "--window-size=1240,720", page.as_uri()], check=True, capture_output=True, timeout=120)


def main(quality_n=256, ddim=True, samples_from=None):
    OUT.mkdir(parents=True, exist_ok=True)
    pipe = ppddpm.load_pipeline()
    traj = ppddpm.sample_trajectory(pipe, seed=777, num_inference_steps=1000, every=50)
    plotting.plot_grid(traj, "prev_sample", every=50, save=OUT / "grid_x_t.png")
    plotting.plot_grid(traj, "pred_original_sample", every=50, save=OUT / "grid_x0.png")
    plotting.plot_trajectory(traj, every=50, save=OUT / "trajectory.png")
    plotting.plot_forward("digit", pipe.scheduler, every=50, save=OUT / "forward.png")
    plotting.plot_schedule(pipe.scheduler, save=OUT / "schedule.png")
    explorer_screenshot(ppddpm.sample_trajectory(pipe, seed=777, num_inference_steps=1000, every=10, fields="all"))
    plotting.animate(ppddpm.sample_trajectory(pipe, seed=777, num_inference_steps=1000, every=20),
                     OUT / "reverse_777.gif", mp4=False)

    findings = []
    variants = ["ppdiffusers", "posterior", "direct", "direct-clip-consistent"]
    for steps in (1000, 50):
        for vt in ("fixed_small", "fixed_large"):
            pipe.scheduler = with_config(pipe.scheduler, variance_type=vt)
            for mode in ("shadow", "free"):
                for clip in (False, True):
                    t0 = time.time()
                    r = ppddpm.compare(pipe, variants, seed=777, num_inference_steps=steps, mode=mode, clip_sample=clip)
                    s = r.summary()
                    findings.append({"steps": steps, "variance_type": vt, "mode": mode, "clip_sample": clip,
                                     "seconds": round(time.time() - t0, 1),
                                     "steps_with_clipping": s["clipping"]["steps_with_clipping"],
                                     **{v: {k: s[v][k] for k in ("equivalent", "max_abs_prev", "max_rel_prev",
                                                                 "worst_ratio_to_bound", "steps_departing",
                                                                 "final_psnr_db")} for v in variants[1:]}})
                    if steps == 1000 and vt == "fixed_small" and clip:
                        plotting.plot_ab(r, "direct", save=OUT / f"ab_direct_{mode}.png")
                    print(findings[-1], flush=True)
    pipe.scheduler = with_config(pipe.scheduler, variance_type="fixed_small")
    many = ppddpm.compare(pipe, ["posterior", "direct"], seed=list(range(32)), num_inference_steps=1000, mode="free",
                          clip_sample=True)
    psnr = many.summary()["direct"]["final_psnr_db"]
    (OUT / "equivalence.json").write_text(json.dumps({"findings": findings, "free_32_seeds_direct_psnr_db": psnr},
                                                     indent=1))

    if samples_from:          # an earlier `ppddpm eval --n N --steps 1000 --seed 0 --out DIR` of this model
        x = np.load(Path(samples_from) / "samples.npz")["samples"]
        if len(x) != quality_n:
            raise SystemExit(f"{samples_from} holds {len(x)} samples, not {quality_n}")
    else:                     # the same call `ppddpm eval` makes: batch k seeded with 64·k
        x = metrics.sample_images(pipe, n=quality_n, seed=0, num_inference_steps=1000, batch_size=64)
    mine = metrics.score(x)
    resolution = pipe.unet.config.sample_size
    real = metrics.real_ceiling(resolution=resolution)
    real_n = metrics.real_ceiling(min(quality_n, 359), resolution=resolution)
    _, acc = metrics.classifier()
    (OUT / "quality.json").write_text(json.dumps({"samples": mine.as_dict(), "real_same_n": real_n.as_dict(),
                                                  "real_all_held_out": real.as_dict(), "classifier_accuracy": acc,
                                                  "coverage": metrics.digit_coverage(x)}, indent=1))
    plotting.contact_sheet(x[:64], ncols=16, save=OUT / "samples.png")
    print(mine, real_n, acc)
    from readme_blocks import fill_all

    fill_all("docs/make_figures.py")
    import verify_findings

    verify_findings.main()
    if ddim:
        import ddim_findings

        ddim_findings.main()


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    reuse = [a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--samples-from=")]
    main(int(args[0]) if args else 256, ddim="--no-ddim" not in sys.argv, samples_from=reuse[0] if reuse else None)
