"""`make demo` / `ppddpm demo`: the article's experiment on the bundled model, end to end."""
from __future__ import annotations

import time
from pathlib import Path


def run_demo(out="runs/demo", model=None, steps: int = 1000, seed: int = 777, quiet: bool = False) -> dict:
    from .comparison import compare
    from .loading import load_pipeline
    from .plotting import plot_ab, plot_grid, plot_trajectory
    from .recording import sample_trajectory

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    say = (lambda *a: None) if quiet else print
    pipe = load_pipeline(model)
    name = model or "the bundled model (ppddpm/assets/ddpm-digits-16, trained on scikit-learn's digits)"
    say(f"model: {name}")

    t0 = time.time()
    traj = sample_trajectory(pipe, seed=seed, num_inference_steps=steps, every=1, progress=not quiet)
    say(f"sampled seed {seed}, {steps} steps, every step recorded: {time.time() - t0:.1f} s")
    written = [traj.save(out / "trajectory.npz")]
    image = traj.images[0]
    image.resize((image.width * 8, image.height * 8), 0).save(out / "sample.png")
    written.append(out / "sample.png")
    every = 50 if steps >= 100 else max(1, steps // 10)
    plot_grid(traj, "prev_sample", every=every, save=out / "grid_x_t.png")
    plot_grid(traj, "pred_original_sample", every=every, save=out / "grid_x0.png")
    plot_trajectory(traj, every=every, save=out / "trajectory.png")
    written += [out / "grid_x_t.png", out / "grid_x0.png", out / "trajectory.png"]

    lines = []
    for clip in (False, True):
        t0 = time.time()
        report = compare(pipe, ["posterior", "direct", "direct-clip-consistent"], seed=seed,
                         num_inference_steps=steps, mode="free", clip_sample=clip, progress=not quiet)
        s = report.summary()
        for v in report.others:
            psnr = s[v]["final_psnr_db"][0]
            lines.append(f"clip_sample={str(clip):5s} {v:24s} equivalent={s[v]['equivalent']!s:5s} "
                         f"max|Δx_t-1|={s[v]['max_abs_prev']:.2e} final PSNR="
                         + ("identical" if psnr is None else f"{psnr:.1f} dB"))
        lines.append(f"clip_sample={str(clip):5s} clipping fired at {s['clipping']['steps_with_clipping']} of "
                     f"{steps} steps ({time.time() - t0:.1f} s)")
        if clip:
            plot_ab(report, "direct", save=out / "ab_clip_on.png")
            report.to_json(out / "ab_clip_on.json")
            written += [out / "ab_clip_on.png", out / "ab_clip_on.json"]
    (out / "ab_summary.txt").write_text("\n".join(lines) + "\n")
    written.append(out / "ab_summary.txt")
    say("A/B, free mode, reference 'posterior' (= ppdiffusers' step):")
    for line in lines:
        say("  " + line)
    say("wrote " + ", ".join(str(p) for p in written))
    return {"trajectory": traj, "written": written, "ab": lines}
