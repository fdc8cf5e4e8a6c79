"""DDIM against DDPM on the bundled model: the measurements behind README's "DDIM" section, the `ddim`
section of `make docs`.

    .venv/bin/python docs/make_docs.py ddim

Writes docs/figures/ddim.json (every number), ddim_ab.png, clip_map.png, and rewrites README's
block between `<!-- ddim-findings:start -->` and `<!-- ddim-findings:end -->` from the JSON
(tests/test_readme.py checks that README and JSON agree). Definitions, one each:
- "equivalent": every step's |Δ x_{t−1}| within the float32 bound of `ABReport.step_bound`;
- "worst × bound": the largest ratio of a step's |Δ x_{t−1}| to that bound;
- "agree": final images' PSNR as displayed ([0, 1]) above 50 dB (`ABReport.final_psnr`);
- "share clipped": values of x̂_0 outside [−1, 1] before the clip (`ppddpm.core.adapters.Adapter.clip_fraction`).
SHORT (CI's check): 20 steps, 4 seeds, n = 16 at 10 steps.
"""
from pathlib import Path

import numpy as np

import ppddpm
from ppddpm.analysis import metrics
from ppddpm.core.config import with_config
from ppddpm.pictures import plotting
from sections import Section, figure_text

SETTINGS = {"full": {"steps": (1000, 50), "seeds": 32, "clip_steps": (10, 20, 50), "n": 256},
            "short": {"steps": (20,), "seeds": 4, "clip_steps": (10,), "n": 16}}
CLIPPED = "ddim(eta=1.0, use_clipped_model_output=True)"
DEFAULT = "ddim(eta=1.0)"
AGREE_DB = 50.0


def equivalence(pipe, settings, pictures=None):
    """DDPM's stock step against DDIM(η=1) with and without ε from the clipped x̂_0, seed 777."""
    rows, words = [], {}
    for steps in settings:
        for variance_type, clips in (("fixed_small", (False, True)), ("fixed_large", (False,))):
            pipe.scheduler = with_config(pipe.scheduler, variance_type=variance_type)
            for clip in clips:
                for mode in ("shadow", "free"):
                    report = ppddpm.compare(pipe, ["ppdiffusers", CLIPPED, DEFAULT], seed=777,
                                            num_inference_steps=steps, mode=mode, clip_sample=clip)
                    fired = np.nonzero(report.clip_fraction["ppdiffusers"][:, 0] > 0)[0]
                    summary = report.summary()
                    for v in report.others:
                        dep = report.departures(v)
                        rows.append({
                            "steps": steps, "variance_type": variance_type, "clip_sample": clip, "mode": mode,
                            "variant": v, "equivalent": summary[v]["equivalent"],
                            "max_abs_prev": summary[v]["max_abs_prev"],
                            "worst_ratio_to_bound": summary[v]["worst_ratio_to_bound"],
                            "steps_departing": int(len(dep)), "steps_with_clipping": int(len(fired)),
                            "departs_only_where_clipping_fires": bool(set(dep.tolist()) <= set(fired.tolist())),
                            "final_psnr_db": summary[v]["final_psnr_db"][0]})
                    if steps == settings[-1] and clip and mode == "free" and variance_type == "fixed_small":
                        words["ddim_ab"] = figure_text(plotting.plot_ab(
                            report, DEFAULT, save=None if pictures is None else Path(pictures) / "ddim_ab.png"))
    pipe.scheduler = with_config(pipe.scheduler, variance_type="fixed_small")
    return rows, words


def seeds_agreeing(pipe, n_seeds, settings):
    """diffusers #553: over many seeds, how often DDPM and DDIM(η=1) give the same final image."""
    out = []
    for steps in settings:
        report = ppddpm.compare(pipe, ["ppdiffusers", CLIPPED, DEFAULT], seed=list(range(n_seeds)),
                                num_inference_steps=steps, mode="free")
        for v in report.others:
            psnr = report.final_psnr(v)
            out.append({"steps": steps, "variant": v, "seeds": n_seeds, "clip_sample": report.clip_sample,
                        "share_agreeing": float((psnr > AGREE_DB).mean()),
                        "median_psnr_db": float(np.median(np.minimum(psnr, 1e3)))})
    return out


def clip_study(pipe, n, settings, pictures=None):
    """Deterministic DDIM (η = 0): where clipping fires, and what it does to sample quality."""
    from ppdiffusers import DDIMPipeline, DDIMScheduler

    rows, words = [], {}
    for steps in settings:
        for clip in (True, False):
            ddim = DDIMPipeline(unet=pipe.unet, scheduler=with_config(pipe.scheduler, cls=DDIMScheduler,
                                                                         clip_sample=clip))
            ddim.set_progress_bar_config(disable=True)
            traj = ppddpm.sample_trajectory(ddim, seed=0, num_inference_steps=steps, batch_size=16,
                                            fields=("prev_sample", "pred_original_sample_unclipped"))
            raw = traj.pred_original_sample_unclipped        # x̂_0 of eq. (15), clip on or off
            share = (np.abs(raw) > 1).reshape(raw.shape[0], raw.shape[1], -1).mean(axis=2)
            if clip and steps == settings[len(settings) // 2]:
                words["clip_map"] = figure_text(plotting.plot_clip_map(
                    traj, save=None if pictures is None else Path(pictures) / "clip_map.png",
                    title=f"DDIM (η = 0, {steps} steps), 16 samples: share of x̂_0 outside [−1, 1] before the clip"))
            images = metrics.sample_images(ddim, n=n, seed=0, num_inference_steps=steps)
            scores = metrics.score(images)
            # what clipping would change: the same run's x̂_0 that left [−1, 1] (also measured with clip off)
            rows.append({"steps": steps, "clip_sample": clip, "n": n,
                         "steps_where_clip_would_fire": int((share > 0).any(axis=1).sum()),
                         "mean_share_outside": float(share.mean()), "max_share_outside": float(share.max()),
                         "last_t_outside": int(traj.timesteps[np.nonzero((share > 0).any(axis=1))[0][-1]])
                         if (share > 0).any() else None,
                         "scores": scores.as_dict()})
    return rows, words


def _pct(x):
    return f"{100 * x:.0f} %"


def render(data) -> str:
    """README's DDIM tables, from the JSON alone."""
    lines = ["| steps | σ_t² | clip | mode | DDIM(η=1, clipped ε): equivalent (worst × bound) | "
             "DDIM(η=1): equivalent (worst × bound) | departs at / clipping fired | DDIM(η=1) final PSNR |",
             "|---|---|---|---|---|---|---|---|"]
    rows = data["equivalence"]
    for r in rows:
        if r["variant"] != CLIPPED:
            continue
        d = next(x for x in rows if x["variant"] == DEFAULT and all(x[k] == r[k] for k in
                                                                    ("steps", "variance_type", "clip_sample", "mode")))
        mark = lambda x: ("✓" if x["equivalent"] else "✗") + f" ({x['worst_ratio_to_bound']:.2g})"  # noqa: E731
        psnr = "identical" if d["final_psnr_db"] is None else f"{d['final_psnr_db']:.1f} dB"
        lines.append(f"| {r['steps']} | {r['variance_type']} | {'on' if r['clip_sample'] else 'off'} | {r['mode']} | "
                     f"{mark(r)} | {mark(d)} | {d['steps_departing']} / {d['steps_with_clipping']} | {psnr} |")
    lines += ["", f"diffusers #553 on this model: share of {data['agreement'][0]['seeds']} seeds (0–"
                  f"{data['agreement'][0]['seeds'] - 1}) whose DDPM and DDIM(η=1) final images agree above "
                  f"{AGREE_DB:.0f} dB, clip_sample as configured (on):", "",
              "| steps | DDIM(η=1, clipped ε) | DDIM(η=1) | median PSNR (clipped ε / default) |", "|---|---|---|---|"]
    for steps in sorted({a["steps"] for a in data["agreement"]}, reverse=True):
        a = {x["variant"]: x for x in data["agreement"] if x["steps"] == steps}
        lines.append(f"| {steps} | {_pct(a[CLIPPED]['share_agreeing'])} | {_pct(a[DEFAULT]['share_agreeing'])} | "
                     f"{a[CLIPPED]['median_psnr_db']:.1f} / {a[DEFAULT]['median_psnr_db']:.1f} dB |")
    lines += ["", "Deterministic DDIM (η = 0), clipping on vs off: where x̂_0 leaves [−1, 1] (16 samples, seed 0) "
                  f"and sample quality (`ppddpm.analysis.metrics`, n = {data['clip_study'][0]['n']}, seeds 0–"
                  f"{data['clip_study'][0]['n'] - 1}):", "",
              "| steps | clip | steps where x̂_0 leaves [−1, 1] | mean share outside | confidence | "
              "class entropy | IS analogue | Fréchet |", "|---|---|---|---|---|---|---|---|"]
    for r in data["clip_study"]:
        sc = r["scores"]
        lines.append(f"| {r['steps']} | {'on' if r['clip_sample'] else 'off'} | {r['steps_where_clip_would_fire']} / "
                     f"{r['steps']} | {r['mean_share_outside']:.1%} | {sc['confidence']:.3f} | "
                     f"{sc['class_entropy']:.3f} | {sc['inception_score']:.2f} | {sc['frechet_distance']:.2f} |")
    return "\n".join(lines)


def compute(setting, pictures=None) -> dict:
    pipe, how = ppddpm.load_pipeline(), SETTINGS[setting]
    rows, words = equivalence(pipe, how["steps"], pictures)
    study, study_words = clip_study(pipe, how["n"], how["clip_steps"], pictures)
    return {"model": "bundled", "seed": 777, "agree_db": AGREE_DB, "equivalence": rows,
            "agreement": seeds_agreeing(pipe, how["seeds"], how["steps"]), "clip_study": study,
            "figures": {**words, **study_words}}


SECTIONS = [Section("ddim", compute, blocks={"ddim-findings": render}, writer="docs/ddim_findings.py")]
