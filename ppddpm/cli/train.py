"""`ppddpm train`: train a DDPM (the article's loop) and save it as a DDPMPipeline."""
from __future__ import annotations

import argparse
import shlex
import sys

from ppddpm._progress import cli_choice
from ppddpm.cli import options
from ppddpm.cli.command import Command
from ppddpm.cli.common import output_folder, refuse_overwrite
from ppddpm.cli.signals import interrupt_status, stopped
from ppddpm.core.formulas import PREDICTION_TYPES
from ppddpm.model.builders import NORM_GROUPS
from ppddpm.model.objective import LOSSES
from ppddpm.model.precision import PRECISIONS
from ppddpm.model.training import (CHECKPOINT, LR_SCHEDULES, MAX_LAYERS_PER_BLOCK, MAX_RESOLUTION, MAX_STEPS,
                                   MAX_WIDTH, TrainConfig, TrainingInterrupted, train)

# the caps of `ppddpm.model.training` (each justified there), said at once by the parser
RESOLUTION = options.int_at_least(1, "--resolution", MAX_RESOLUTION, " (pixel-space diffusion is trained up to 1024²)")
STEPS = options.int_at_least(1, "--steps", MAX_STEPS, " (every step's loss is kept in the checkpoint's header)")
LAYERS = options.int_at_least(1, "--layers-per-block", MAX_LAYERS_PER_BLOCK, " (DDPM and ADM use 2 or 3)")


def level_width(text):
    """--block-out-channels: one level's channels, a multiple of the UNet's GroupNorm groups up to MAX_WIDTH."""
    value = options.int_at_least(1, "--block-out-channels", MAX_WIDTH, " (channels of a UNet level)")(text)
    if value % NORM_GROUPS:
        raise argparse.ArgumentTypeError(f"--block-out-channels takes multiples of {NORM_GROUPS} (the UNet's "
                                         f"GroupNorm groups), got {value}")
    return value


def add_training_options(p):
    """The options of `ppddpm train`; each one that is a `TrainConfig` field has that field's name."""
    p.add_argument("--data", default="digits", help="'digits' (offline) or a folder of images")
    p.add_argument("--resolution", type=RESOLUTION, default=8,
                   help="training resolution (the digits are 8x8; larger is a bilinear upscale)")
    p.add_argument("--channels", type=int, choices=[1, 3], default=1, help="1 (gray) or 3 (RGB)")
    p.add_argument("--steps", type=STEPS, default=3000, help="optimisation steps")
    options.add_batch_size(p, "images per optimisation step", default=64)
    p.add_argument("--lr", type=options.positive_float("--lr"), default=2e-3, help="peak learning rate (AdamW)")
    p.add_argument("--warmup", type=options.nonneg("--warmup"), default=100, help="linear warm-up steps")
    p.add_argument("--lr-schedule", choices=list(LR_SCHEDULES), default="cosine",
                   help="after warm-up: cosine decay to lr/10 over the remaining steps, or constant")
    p.add_argument("--ema-decay", type=options.finite_float("--ema-decay"), default=0.995,
                   help="decay of the weights' EMA, which is saved")
    p.add_argument("--block-out-channels", type=level_width, nargs="+", default=[32, 64],
                   help="UNet channels per level (one level per number)")
    p.add_argument("--layers-per-block", type=LAYERS, default=1, help="UNet ResNet layers per level")
    p.add_argument("--stop-at", type=options.nonneg("--stop-at"), default=0,
                   help="stop after this many steps; the learning-rate schedule still spans --steps (default: at "
                        "--steps)")
    add_objective_options(p)
    options.add_first_seed(p, "seed of the initial weights and the batches")
    p.add_argument("--checkpoint-every", type=options.positive("--checkpoint-every"), default=250,
                   help="write --out/checkpoint.safetensors every N steps (and at the end)")
    p.add_argument("--resume", action="store_true", help="continue from --out/checkpoint.safetensors")
    options.add_trust_pickle(p, "a pickled checkpoint.pdparams of ppddpm <= 0.2 on --resume")
    options.add_out(p, "runs/train", "folder for the checkpoint and the saved pipeline")
    options.add_quiet(p)


def add_objective_options(p):
    """What the model predicts, what it minimises and in which precision (`ppddpm.model.objective`)."""
    p.add_argument("--prediction-type", choices=list(PREDICTION_TYPES), default="epsilon",
                   help="the model's target: the noise ε (the paper's), x_0 itself ('sample') or v; the saved "
                        "scheduler says it, so sampling, verify, compare and bpd use it")
    p.add_argument("--loss", choices=list(LOSSES), default="simple",
                   help="simple: unweighted MSE on the target (eq. 14); vlb: the variational bound, fixed variance; "
                        "hybrid: simple + 0.001 x the bound with a learned variance (improved DDPM; UNet outputs x2)")
    p.add_argument("--precision", choices=list(PRECISIONS), default="float32",
                   help="paddle.amp mixed precision (GradScaler for float16); on a CPU paddle computes float32 and "
                        "the run says so")
    p.add_argument("--log-every", type=options.positive("--log-every"), default=10,
                   help="record every N steps the shares of gradients and loss values that float16 / bfloat16 "
                        "would flush to zero or make subnormal (train_losses.json)")


def resume_command(args, **extra) -> str:
    """The `ppddpm train` command of `args` (its options that differ from the defaults, and always
    --steps and --out), with `extra` options added: what a user pastes to resume."""
    defaults = argparse.ArgumentParser()
    add_training_options(defaults)
    defaults = vars(defaults.parse_args([]))
    words = ["ppddpm", "train"]
    for key, value in dict(vars(args), **extra).items():
        if key not in defaults or value is False or (value == defaults[key] and key not in ("steps", "out")):
            continue
        flag = "--" + key.replace("_", "-")
        words += [flag] if value is True else [flag, *map(str, value if isinstance(value, list) else [value])]
    return shlex.join(words)


class TrainCommand(Command):
    """`ppddpm.model.training.train` with a `TrainConfig` of the options; Ctrl-C or SIGTERM keeps the
    last checkpoint and prints the command that resumes from it."""

    @classmethod
    def register_subcommand(cls, commands):
        p = commands.add_parser("train", help="train a DDPM (the article's loop) and save it as a DDPMPipeline")
        add_training_options(p)
        p.set_defaults(func=cls)

    def run(self):
        args = self.args
        config = TrainConfig.from_options(vars(args))
        config.check()                       # sizes and memory, before --out is made or paddle loads
        out = output_folder(args)
        if not args.resume:
            for done in (out / CHECKPOINT, out / "model_index.json"):
                refuse_overwrite(args, done, " — a trained model; --resume continues it")
        try:
            result = train(config, resume=args.resume, progress=cli_choice(args.quiet),
                           trust_pickle=args.trust_pickle)
        except TrainingInterrupted as stop:
            self._stopped(stop)
        tail = result.losses[-100:]
        total = f" ({len(result.losses)} in all)" if len(result.losses) != result.steps_this_run else ""
        print(f"trained {result.steps_this_run} steps in {result.seconds:.0f} s this run{total}; mean loss of the "
              f"last {len(tail)} steps {sum(tail) / max(1, len(tail)):.4f}; pipeline saved to {result.output_dir}")

    def _stopped(self, stop: TrainingInterrupted):
        """One line: how far the run got, and the command that resumes it (or that there is nothing to resume)."""
        args = self.args
        kept = (f"kept {stop.checkpoint} (step {stop.checkpoint_step}); resume with: "
                f"{resume_command(args, resume=True)}" if stop.checkpoint else
                f"no checkpoint yet (the first comes at step {min(args.checkpoint_every, args.stop_at or args.steps)});"
                f" nothing to resume")
        print(f"ppddpm train: {stopped(stop.cause)} after {stop.steps_done} of {args.stop_at or args.steps} steps; "
              f"{kept}", file=sys.stderr)
        raise SystemExit(interrupt_status(stop.cause)) from None
