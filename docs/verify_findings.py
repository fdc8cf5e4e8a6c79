"""Every sampler ppddpm records, held against its float64 reference on the bundled model: the `verify`
section of `make docs`.

    .venv/bin/python docs/make_docs.py verify

For each sampler family of `ppddpm.core.adapters` (made from the bundled DDPM config by
`ppddpm.with_sampler`), one recorded run (seed 0, batch 4, all fields, every step) is replayed by
`ppddpm.verify`; then three runs with a deliberately wrong step show what a departure looks like.
Writes docs/figures/verify.json (every number) and README's block between
`<!-- verify-table:start -->` and `<!-- verify-table:end -->` (tests/test_readme.py checks that
README and JSON agree). "worst × bound": the largest ratio, over the run's steps, of a step's
gap to the float32 bound of `ppddpm.verify` (≤ 1 holds). SHORT (CI's check): 10 steps, batch 2.
"""
import ppddpm
import ppdiffusers
from ppddpm.core.adapters import families
from sections import Section

STEPS = {"full": (50, 4), "short": (10, 2)}          # (steps, batch) per setting
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
            "departing_steps": sum(not s.holds for s in report.steps)}


def samplers(pipe, steps, batch):
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
                traj = ppddpm.sample_trajectory(run, seed=0, num_inference_steps=steps, batch_size=batch, fields="all",
                                                pipe_kwargs=arguments)
            except Exception as exc:           # a sampler that cannot run on a DDPM config says why
                traj = exc
            rows.append(_row(label, family, steps, traj))
    return rows


def broken(pipe, steps, batch):
    """Three wrong steps: eq. (11) where clipping fires, the article's α_t on a strided schedule
    (clipping off), and Euler through DDPMPipeline's loop (x_T not scaled by init_noise_sigma)."""
    from ppdiffusers import DDPMPipeline, EulerDiscreteScheduler

    rows = []
    for label, variant, clip in (("ddpm, step formula direct (clipping on)", "direct", True),
                                 ("ddpm, step formula direct-article (clipping off)", "direct-article", False)):
        scheduler = ppddpm.with_config(pipe.scheduler, clip_sample=clip)
        run = DDPMPipeline(unet=pipe.unet, scheduler=scheduler)
        with ppddpm.patch_step(run.scheduler, variant):
            rows.append(_row(label, "ddpm", steps, ppddpm.sample_trajectory(run, seed=0, num_inference_steps=steps,
                                                                             batch_size=batch, fields="all")))
    run = DDPMPipeline(unet=pipe.unet, scheduler=ppddpm.with_config(pipe.scheduler, cls=EulerDiscreteScheduler))
    rows.append(_row("euler in DDPMPipeline's loop (x_T unscaled)", "euler", steps,
                     ppddpm.sample_trajectory(run, seed=0, num_inference_steps=steps, batch_size=batch, fields="all")))
    return rows


def render(data) -> str:
    lines = [f"`ppddpm.verify` on the bundled model: each sampler made from its DDPM config (`ppddpm.with_sampler`), "
             f"{data['steps']} steps, seed 0, batch {data['batch']}, all fields ({data['source']}):", "",
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


def compute(setting, pictures=None) -> dict:
    steps, batch = STEPS[setting]
    pipe = ppddpm.load_pipeline()
    return {"steps": steps, "batch": batch, "source": "docs/verify_findings.py",
            "samplers": samplers(pipe, steps, batch), "broken": broken(pipe, steps, batch)}


SECTIONS = [Section("verify", compute, blocks={"verify-table": render}, writer="docs/verify_findings.py")]
