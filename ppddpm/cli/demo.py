"""`make demo` / `ppddpm demo`: the article's experiment on the bundled model, end to end."""
from __future__ import annotations

import os
import time
from pathlib import Path

from ppddpm._io import atomic_path
from ppddpm._progress import cli_choice
from ppddpm.analysis.ab import compare
from ppddpm.analysis.findings import EQUIVALENCE_VARIANTS, THREADS, equivalence_finding, equivalence_table
from ppddpm.cli import options
from ppddpm.cli.command import Command
from ppddpm.cli.common import declared_checks, output_folder
from ppddpm.pipelines.recording import sample_trajectory
from ppddpm.model.loading import load_pipeline
from ppddpm.pictures.plotting import contact_sheet, plot_ab, plot_grid, plot_trajectory

VARIANTS = EQUIVALENCE_VARIANTS                # README's equivalence table


def run_demo(out="runs/demo", model=None, steps: int = 1000, seed: int = 777, quiet: bool = False,
             trust_pickle: bool = False, threads: int = None) -> dict:
    """Sample, draw the article's grids and print README's equivalence rows for `steps` (module docstring).
    `threads`: paddle's CPU threads for the run (`ppddpm demo`: README's count, `findings.THREADS`); None
    leaves paddle's setting as it is."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    say = (lambda *a: None) if quiet else print
    pipe = load_pipeline(model, trust_pickle=trust_pickle)
    if threads:
        from paddle.base import core

        core.set_num_threads(int(threads))    # as OMP_NUM_THREADS would, without paddle's warning about it
    name = model or "the bundled model (ppddpm/assets/ddpm-digits-8, trained on scikit-learn's digits)"
    say(f"model: {name}")

    t0 = time.time()
    traj = sample_trajectory(pipe, seed=seed, num_inference_steps=steps, every=1, progress=cli_choice(quiet))
    say(f"sampled seed {seed}, {steps} steps, every step recorded: {time.time() - t0:.1f} s")
    written = [traj.save(out / "trajectory.npz")]
    final = traj.prev_sample[-1][:1]
    contact_sheet(final, scale=max(1, 128 // final.shape[-1]), gap=0, save=out / "sample.png")      # 128 px, nearest
    written.append(out / "sample.png")
    plot_grid(traj, "prev_sample", save=out / "grid_x_t.png")            # every EVERY_T in t: 950, 900, …
    plot_grid(traj, "pred_original_sample", save=out / "grid_x0.png")
    plot_trajectory(traj, save=out / "trajectory.png")
    written += [out / "grid_x_t.png", out / "grid_x0.png", out / "trajectory.png"]

    findings = []
    for clip in (False, True):
        # the configuration of README's table (make docs), so that the same quantity gets the same number:
        # with the default batched=True a lane's rounding depends on which lanes share the UNet call
        report = compare(pipe, VARIANTS, seed=seed, num_inference_steps=steps, mode="free", clip_sample=clip,
                         progress=cli_choice(quiet))
        findings.append(equivalence_finding(report, pipe.scheduler.config.variance_type))
        if clip:
            plot_ab(report, "direct", save=out / "ab_clip_on.png")
            report.to_json(out / "ab_clip_on.json")
            written += [out / "ab_clip_on.png", out / "ab_clip_on.json"]
    lines = equivalence_table(findings)
    with atomic_path(out / "ab_summary.txt") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    written.append(out / "ab_summary.txt")
    say(f"A/B, free mode, against ppdiffusers' stock step: README's \"The equivalence, measured\" rows for "
        f"{steps} steps, seed {seed} (the digits of rounding-level gaps follow the CPU and paddle's thread count: "
        + (f"{threads} here, as README's were made" if threads else f"README's were made with {THREADS}") + "):")
    for line in lines:
        say("  " + line)
    say("wrote " + ", ".join(str(p) for p in written))
    return {"trajectory": traj, "written": written, "ab": lines, "findings": findings}


class DemoCommand(Command):
    """`ppddpm demo`: `run_demo` into --out."""

    @classmethod
    def register_subcommand(cls, commands):
        p = commands.add_parser("demo", help="what `make demo` runs: sample, grids, A/B summary")
        options.add_model(p)
        options.add_steps(p, "num_inference_steps of the run and the A/B")
        options.add_out(p, "runs/demo", "folder for the demo's pictures and files", force=False)
        options.add_quiet(p)
        p.set_defaults(func=cls)

    def run(self):
        args = self.args
        declared_checks(args)                # --steps against the model's T, before paddle loads
        # README's rows were made with THREADS of paddle's CPU threads: the same count gives the same digits
        # (on this kind of CPU), unless the user chose a count (OMP_NUM_THREADS)
        threads = None if os.environ.get("OMP_NUM_THREADS") else THREADS
        run_demo(output_folder(args), model=args.model, steps=args.steps, quiet=args.quiet,
                 trust_pickle=args.trust_pickle, threads=threads)
