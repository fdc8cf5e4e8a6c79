"""Every sampler ppddpm records, held against its float64 reference on the bundled model.

    .venv/bin/python docs/verify_findings.py          # also run by `make figures`

For each sampler family of `ppddpm.core.adapters` (made from the bundled DDPM config by
`ppddpm.with_sampler`), one recorded run (seed 0, batch 4, all fields, every step) is replayed by
`ppddpm.verify`; then three runs with a deliberately wrong step show what a departure looks like.
Writes docs/figures/verify.json (every number) and README's block between
`<!-- verify-table:start -->` and `<!-- verify-table:end -->` (tests/test_readme.py checks that
README and JSON agree). "worst × bound": the largest ratio, over the run's steps, of a step's
gap to the float32 bound of `ppddpm.verify` (≤ 1 holds). About 2 minutes on 2 CPU cores.
"""
import json
import sys
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "docs"))
import ppddpm  # noqa: E402
import ppdiffusers  # noqa: E402
from ppddpm.core.adapters import families  # noqa: E402

OUT = ROOT / "docs" / "figures"
JSON = OUT / "verify.json"
STEPS = 50
# (config overrides, step arguments) per family (default: one run as made from the DDPM config)
RUNS = {"ddim": [({}, {"eta": 0.0}), ({}, {"eta": 1.0})]}


def _row(label, family, steps, traj_or_error):
    if isinstance(traj_or_error, Exception):
        first_line = str(traj_or_error).strip().splitlines()[0]
        return {"label": label, "family": family, "steps": steps,
                "error": f"{type(traj_or_error).__name__}: {first_line}"}
    report = ppddpm.verify(traj_or_error)
    first = report.first_departure
    return {"label": label, "family": family, "steps": steps, "calls": len(report.steps), "ok": report.ok,
            "worst_ratio": max(s.ratio for s in report.steps),
            "x_T": report.x_T, "first_departure": None if first is None else {"step": first.call, "t": first.t},
            "departing_steps": sum(not s.holds for s in report.steps), "summary": report.summary()}


def samplers(pipe):
    rows = []
    for family in families():
        for overrides, arguments in RUNS.get(family, [({}, {})]):
            label = family + "".join(f" ({k}={v})" for k, v in {**overrides, **arguments}.items())
            try:
                if overrides:                  # the family's scheduler from the DDPM config, with these overrides
                    cls = getattr(ppdiffusers, families()[family][0])
                    run = ppddpm.SamplerPipeline(unet=pipe.unet,
                                                 scheduler=ppddpm.with_config(pipe.scheduler, cls=cls, **overrides))
                else:
                    run = ppddpm.with_sampler(pipe, family)
                traj = ppddpm.sample_trajectory(run, seed=0, num_inference_steps=STEPS, batch_size=4, fields="all",
                                                pipe_kwargs=arguments)
            except Exception as exc:           # a sampler that cannot run on a DDPM config says why
                traj = exc
            rows.append(_row(label, family, STEPS, traj))
            print(rows[-1].get("summary") or rows[-1]["error"])
    return rows


def broken(pipe):
    """Three wrong steps: eq. (11) where clipping fires, the article's α_t on a strided schedule
    (clipping off), and Euler through DDPMPipeline's loop (x_T not scaled by init_noise_sigma)."""
    from ppdiffusers import DDPMPipeline, EulerDiscreteScheduler

    rows = []
    for label, variant, clip in (("ddpm, step formula direct (clipping on)", "direct", True),
                                 ("ddpm, step formula direct-article (clipping off)", "direct-article", False)):
        scheduler = ppddpm.with_config(pipe.scheduler, clip_sample=clip)
        run = DDPMPipeline(unet=pipe.unet, scheduler=scheduler)
        with ppddpm.patch_step(run.scheduler, variant):
            rows.append(_row(label, "ddpm", STEPS, ppddpm.sample_trajectory(run, seed=0, num_inference_steps=STEPS,
                                                                             batch_size=4, fields="all")))
    run = DDPMPipeline(unet=pipe.unet, scheduler=ppddpm.with_config(pipe.scheduler, cls=EulerDiscreteScheduler))
    rows.append(_row("euler in DDPMPipeline's loop (x_T unscaled)", "euler", STEPS,
                     ppddpm.sample_trajectory(run, seed=0, num_inference_steps=STEPS, batch_size=4, fields="all")))
    for row in rows:
        print(row["summary"])
    return rows


def render(data) -> str:
    lines = [f"`ppddpm.verify` on the bundled model: each sampler made from its DDPM config (`ppddpm.with_sampler`), "
             f"{data['steps']} steps, seed 0, batch 4, all fields ({data['source']}):", "",
             "| sampler | step calls | x_T std / init_noise_sigma | worst step × bound | verdict |",
             "|---|---|---|---|---|"]
    for row in data["samplers"] + data["broken"]:
        if "error" in row:
            lines.append(f"| {row['label']} | — | — | — | does not run here: {row['error']} |")
            continue
        x_T = row["x_T"]
        start = f"{x_T['std']:.3g} / {x_T['init_noise_sigma']:.3g}" if x_T else "—"
        first = row["first_departure"]
        verdict = ("holds" if row["ok"] else
                   "x_T departs" if first is None else
                   f"departs at {row['departing_steps']} steps, first step {first['step']} (t={first['t']:g})")
        lines.append(f"| {row['label']} | {row['calls']} | {start} | {row['worst_ratio']:.2g} | {verdict} |")
    return "\n".join(lines)


def main():
    from readme_blocks import fill

    pipe = ppddpm.load_pipeline()
    data = {"steps": STEPS, "source": "docs/verify_findings.py", "samplers": samplers(pipe), "broken": broken(pipe)}
    OUT.mkdir(parents=True, exist_ok=True)
    JSON.write_text(json.dumps(data, indent=1))
    fill("verify-table", render(data), f"docs/verify_findings.py from {JSON.relative_to(ROOT)}")
    print(f"wrote {JSON} and README's verify-table block")


if __name__ == "__main__":
    main()
