"""`ppddpm` command line (also `python -m ppddpm`): a thin layer over the API.

Every subcommand writes into `--out`; bad input ends in one line on stderr and exit 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _positive(name):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a positive integer, got {text!r}") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"{name} must be a positive integer, got {value}")
        return value
    return parse


def _nonneg(name):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a non-negative integer, got {text!r}") from None
        if value < 0:
            raise argparse.ArgumentTypeError(f"{name} must be a non-negative integer, got {value}")
        return value
    return parse


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


def build_parser():
    parser = argparse.ArgumentParser(prog="ppddpm", description="Watch DDPM work, step by step (ppdiffusers).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("sample", help="sample with a pipeline, write PNGs and the trajectory .npz")
    _sampling_args(p)
    p.add_argument("--all-fields", action="store_true", help="also record x_t, ε̂, unclipped x̂_0 and z")
    p.add_argument("--out", default="runs/sample")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_sample)
    return parser


EXPECTED_ERRORS = (ValueError, KeyError, TypeError, FileNotFoundError, FileExistsError, NotImplementedError,
                   OSError)


def main(argv=None):
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
