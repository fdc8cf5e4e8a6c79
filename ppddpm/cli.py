"""`ppddpm` command line (also `python -m ppddpm`): a thin layer over the API.

Every subcommand writes into `--out`; bad input ends in one line on stderr and exit 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _int_at_least(low, name):
    kind = "positive" if low == 1 else "non-negative"

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a {kind} integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{name} must be a {kind} integer, got {value}")
        return value
    return parse


def _positive(name):
    return _int_at_least(1, name)


def _nonneg(name):
    return _int_at_least(0, name)


def _steps(text):
    value = _positive("--steps")(text)
    if value > 1000:
        raise argparse.ArgumentTypeError(f"--steps must be between 1 and 1000 (the model's T), got {value}")
    return value


def _model_arg(p):
    p.add_argument("--model", default=None,
                   help="pipeline directory or hub id (default: the bundled offline model)")


def _sampling_args(p, every_default=1):
    _model_arg(p)
    p.add_argument("--seed", type=_nonneg("--seed"), default=777)
    p.add_argument("--steps", type=_steps, default=1000, help="num_inference_steps (1..1000)")
    p.add_argument("--batch-size", type=_positive("--batch-size"), default=1)
    p.add_argument("--every", type=_positive("--every"), default=every_default,
                   help="record every k-th step (and always the last)")


def cmd_sample(args):
    from .loading import load_pipeline
    from .recording import sample_trajectory

    pipe = load_pipeline(args.model)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fields = "all" if args.all_fields else ("prev_sample", "pred_original_sample")
    traj = sample_trajectory(pipe, seed=args.seed, num_inference_steps=args.steps, batch_size=args.batch_size,
                             every=args.every, fields=fields, progress=not args.quiet)
    paths = []
    for i, image in enumerate(traj.images):
        path = out / f"sample_seed{args.seed}_{i}.png"
        image.save(path)
        paths.append(str(path))
    npz = traj.save(out / f"trajectory_seed{args.seed}.npz")
    print(f"wrote {len(paths)} PNG(s) and {npz} ({len(traj)} recorded steps of {args.steps})")
    return traj


def _out(args) -> Path:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _variant_list(text):
    names = [v.strip() for v in text.split(",") if v.strip()]
    if len(names) < 2:
        raise argparse.ArgumentTypeError(f"--variants needs at least two comma-separated names, got {text!r}")
    return names


def _seeds(text):
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seed takes an integer or a comma-separated list, got {text!r}") from None
    if not seeds or min(seeds) < 0:
        raise argparse.ArgumentTypeError(f"--seed takes non-negative integers, got {text!r}")
    return seeds[0] if len(seeds) == 1 else seeds


def _clip(text):
    choices = {"config": None, "on": True, "off": False}
    if text not in choices:
        raise argparse.ArgumentTypeError(f"--clip must be one of {', '.join(choices)}, got {text!r}")
    return choices[text]


def cmd_ab(args):
    from .comparison import compare
    from .loading import load_pipeline
    from .step_variants import get_variant

    for name in args.variants:          # fail before loading a model
        get_variant(name)
    pipe = load_pipeline(args.model)
    report = compare(pipe, args.variants, seed=args.seed, num_inference_steps=args.steps,
                     batch_size=args.batch_size, mode=args.mode, clip_sample=args.clip, progress=not args.quiet)
    out = _out(args)
    print(report.table(rows=args.rows))
    report.to_json(out / "ab.json")
    written = [out / "ab.json"]
    if args.plot:
        from .plotting import plot_ab

        for v in report.others:
            path = out / f"ab_{v}.png"
            plot_ab(report, v, save=path)
            written.append(path)
    print("wrote " + ", ".join(map(str, written)))
    return report


def cmd_patches(args):
    from . import source_patches as sp

    if args.action == "list":
        for name in sp.available():
            print(f"{name:22s} {sp.describe(name)}")
    elif args.action == "check":
        result = sp.check(args.names or None)
        for name, status in result.items():
            print(f"{name:22s} {status}")
        if any(v != "ok" for v in result.values()):
            raise ValueError("some patches do not apply to the installed ppdiffusers (see above)")
    else:
        if not args.to:
            raise ValueError("patches apply needs --to DIR (a new folder; site-packages is never patched)")
        dest = sp.apply(args.to, args.names or None)
        print(f"patched copy of ppdiffusers in {dest}; use it with: import sys; sys.path.insert(0, {str(dest)!r})")


def cmd_upstream(args):
    from .upstream import KNOWN_FAILURES, run_scheduler_suite

    stock = run_scheduler_suite()
    other = run_scheduler_suite(args.variant)
    print(f"{'ppdiffusers test':55s} {'stock':8s} {args.variant}")
    regressions = []
    for name in sorted(stock):
        note = KNOWN_FAILURES.get(name, "") if stock[name] != "passed" else ""
        print(f"{name:55s} {stock[name]:8s} {other.get(name, '-'):8s} {note}")
        if stock[name] == "passed" and other.get(name) != "passed":
            regressions.append(name)
    if regressions:
        raise ValueError(f"{args.variant} fails tests the stock step passes: {', '.join(regressions)}")


def cmd_train(args):
    from .training import TrainConfig, train

    cfg = TrainConfig(output_dir=args.out, data=args.data, resolution=args.resolution, channels=args.channels,
                      steps=args.steps, batch_size=args.batch_size, lr=args.lr, ema_decay=args.ema_decay,
                      seed=args.seed, checkpoint_every=args.checkpoint_every)
    result = train(cfg, resume=args.resume, progress=not args.quiet)
    tail = result.losses[-100:]
    print(f"trained {len(result.losses)} steps in {result.seconds:.0f} s this run; mean loss of the last "
          f"{len(tail)} steps {sum(tail) / max(1, len(tail)):.4f}; pipeline saved to {result.output_dir}")


def cmd_eval(args):
    from .loading import load_pipeline
    from .metrics import classifier, real_ceiling, sample_images, score

    pipe = load_pipeline(args.model)
    if pipe.unet.config.in_channels != 1:
        raise ValueError("ppddpm eval scores digit models (1 channel); this pipeline has "
                         f"{pipe.unet.config.in_channels} channels")
    images = sample_images(pipe, n=args.n, seed=args.seed, num_inference_steps=args.steps)
    mine = score(images)
    ceiling = real_ceiling(min(args.n, 359), resolution=pipe.unet.config.sample_size)
    _, acc = classifier()
    print(f"classifier: MLP on the digits' train split, held-out accuracy {acc:.3f}")
    print(f"{'':16s} {'samples':>10s} {'real held-out':>14s}")
    for key in ("confidence", "class_entropy", "inception_score", "frechet_distance"):
        print(f"{key:16s} {getattr(mine, key):10.3f} {getattr(ceiling, key):14.3f}")
    print(f"n = {mine.n} samples ({args.steps} steps, seed {args.seed}) vs {ceiling.n} real digits; "
          f"confidence at {mine.confidence / ceiling.confidence:.0%} of the real ceiling")
    if args.out:
        from ._io import atomic_path

        with atomic_path(Path(args.out)) as tmp:
            tmp.write_text(json.dumps({"samples": mine.as_dict(), "real": ceiling.as_dict(),
                                       "classifier_accuracy": acc, "steps": args.steps, "seed": args.seed}, indent=1))


def cmd_grid(args):
    from .plotting import plot_grid, plot_trajectory
    from .recording import Trajectory

    traj = Trajectory.load(args.run)
    out = _out(args)
    written = []
    for field, name in (("prev_sample", "grid_x_t.png"), ("pred_original_sample", "grid_x0.png")):
        if field in traj.fields:
            plot_grid(traj, field, every=args.every, ncols=args.ncols, save=out / name)
            written.append(out / name)
    if {"prev_sample", "pred_original_sample"} <= set(traj.fields):
        plot_trajectory(traj, every=args.every, ncols=args.ncols, save=out / "trajectory.png")
        written.append(out / "trajectory.png")
    print("wrote " + ", ".join(map(str, written)))


def cmd_forward(args):
    from .loading import load_pipeline
    from .plotting import load_image, plot_forward

    pipe = load_pipeline(args.model)
    res = pipe.unet.config.sample_size
    image = load_image(args.image, resolution=res if isinstance(res, int) else None,
                       channels=pipe.unet.config.in_channels)
    path = _out(args) / "forward.png"
    plot_forward(image, pipe.scheduler, every=args.every, save=path)
    print(f"wrote {path}")


def cmd_schedule(args):
    from .loading import load_pipeline
    from .plotting import plot_schedule

    path = _out(args) / "schedule.png"
    plot_schedule(load_pipeline(args.model).scheduler, save=path)
    print(f"wrote {path}")


def cmd_animate(args):
    from .plotting import animate
    from .recording import Trajectory

    traj = Trajectory.load(args.run)
    written = animate(traj, _out(args) / f"{args.field}.gif", field=args.field, index=args.index)
    print("wrote " + ", ".join(map(str, written)))


def cmd_demo(args):
    from .demo import run_demo

    run_demo(args.out, model=args.model, steps=args.steps, quiet=args.quiet)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (`ppddpm sample: error: ...`), exit 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser():
    parser = _Parser(prog="ppddpm", description="Watch DDPM work, step by step (ppdiffusers).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("sample", help="sample with a pipeline, write PNGs and the trajectory .npz")
    _sampling_args(p)
    p.add_argument("--all-fields", action="store_true", help="also record x_t, ε̂, unclipped x̂_0 and z")
    p.add_argument("--out", default="runs/sample")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("ab", help="A/B-compare step variants; print the table, write ab.json (and plots)")
    _model_arg(p)
    p.add_argument("--variants", type=_variant_list, default=["posterior", "direct"],
                   help="comma-separated, the first is the reference (default: posterior,direct)")
    p.add_argument("--seed", type=_seeds, default=777, help="an integer, or a comma-separated list")
    p.add_argument("--steps", type=_steps, default=1000)
    p.add_argument("--batch-size", type=_positive("--batch-size"), default=1)
    p.add_argument("--mode", choices=["shadow", "free"], default="shadow")
    p.add_argument("--clip", type=_clip, default=None, help="x̂_0 clipping: config (default), on or off")
    p.add_argument("--rows", type=_positive("--rows"), default=20, help="table rows per variant")
    p.add_argument("--plot", action="store_true", help="also write ab_<variant>.png")
    p.add_argument("--out", default="runs/ab")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_ab)

    p = sub.add_parser("patches", help="the article's source edits as diffs: list, check, apply --to DIR")
    p.add_argument("action", choices=["list", "check", "apply"])
    p.add_argument("names", nargs="*", help="patch names (default: all)")
    p.add_argument("--to", help="apply: a new folder for the patched copy of ppdiffusers")
    p.set_defaults(func=cmd_patches)

    p = sub.add_parser("upstream", help="run ppdiffusers' own DDPM scheduler tests with a variant patched in")
    p.add_argument("--variant", default="posterior")
    p.set_defaults(func=cmd_upstream)

    p = sub.add_parser("train", help="train a DDPM (the article's loop) and save it as a DDPMPipeline")
    p.add_argument("--data", default="digits", help="'digits' (offline) or a folder of images")
    p.add_argument("--resolution", type=_positive("--resolution"), default=16)
    p.add_argument("--channels", type=int, choices=[1, 3], default=1)
    p.add_argument("--steps", type=_positive("--steps"), default=3000, help="optimisation steps")
    p.add_argument("--batch-size", type=_positive("--batch-size"), default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--ema-decay", type=float, default=0.995)
    p.add_argument("--seed", type=_nonneg("--seed"), default=0)
    p.add_argument("--checkpoint-every", type=_positive("--checkpoint-every"), default=250)
    p.add_argument("--resume", action="store_true", help="continue from --out/checkpoint.pdparams")
    p.add_argument("--out", default="runs/train")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="digit-classifier scores of a model's samples vs real held-out digits")
    _model_arg(p)
    p.add_argument("--n", type=_positive("--n"), default=64, help="number of samples")
    p.add_argument("--steps", type=_steps, default=1000)
    p.add_argument("--seed", type=_nonneg("--seed"), default=0)
    p.add_argument("--out", default=None, help="also write the scores as JSON here")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("grid", help="the article's 50-step grids (x_t, x̂_0) from a trajectory .npz")
    p.add_argument("run", help="a trajectory .npz (ppddpm sample) or a streamed trajectory folder")
    p.add_argument("--every", type=_positive("--every"), default=50)
    p.add_argument("--ncols", type=_positive("--ncols"), default=10)
    p.add_argument("--out", default="runs/grid")
    p.set_defaults(func=cmd_grid)

    p = sub.add_parser("forward", help="the forward process q(x_t|x_0) on an image, every 50 steps")
    _model_arg(p)
    p.add_argument("--image", default="digit", help="'digit' / 'digitN' (a held-out digit) or an image path")
    p.add_argument("--every", type=_positive("--every"), default=50)
    p.add_argument("--out", default="runs/forward")
    p.set_defaults(func=cmd_forward)

    p = sub.add_parser("schedule", help="β_t, ᾱ_t, SNR and the eq. (7) coefficients of a model's scheduler")
    _model_arg(p)
    p.add_argument("--out", default="runs/schedule")
    p.set_defaults(func=cmd_schedule)

    p = sub.add_parser("animate", help="a trajectory as an animated GIF (and MP4 where OpenCV is installed)")
    p.add_argument("run", help="a trajectory .npz or streamed folder")
    p.add_argument("--field", default="prev_sample")
    p.add_argument("--index", type=_nonneg("--index"), default=0)
    p.add_argument("--out", default="runs/animate")
    p.set_defaults(func=cmd_animate)

    p = sub.add_parser("demo", help="what `make demo` runs: sample, grids, A/B summary")
    _model_arg(p)
    p.add_argument("--steps", type=_steps, default=1000)
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_demo)
    return parser


EXPECTED_ERRORS = (ValueError, KeyError, TypeError, FileNotFoundError, FileExistsError, NotImplementedError,
                   OSError)


def _quiet_imports():
    """paddle and setuptools warn on every import (no ccache; distutils): noise for a CLI user."""
    import warnings

    warnings.filterwarnings("ignore", message="No ccache found")
    warnings.filterwarnings("ignore", message="Setuptools is replacing distutils")


def main(argv=None):
    _quiet_imports()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except KeyboardInterrupt:
        print("ppddpm: interrupted", file=sys.stderr)
        return 130
    except EXPECTED_ERRORS as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        print(f"ppddpm {args.command}: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
