"""`ppddpm ab`: A/B-compare step variants; print the table, write ab.json (and plots)."""
from __future__ import annotations

import argparse
import re

from ppddpm._progress import cli_choice
from ppddpm.analysis.ab import compare
from ppddpm.cli import options
from ppddpm.cli.command import Command
from ppddpm.core.ranks import is_lead
from ppddpm.cli.common import declared_checks, distinct_seeds, load_model, output_folder, refuse_overwrite, seed_span
from ppddpm.errors import BadValue
from ppddpm.pictures import plotting
from ppddpm.variants.registry import get_variant, split_specs

PLOTTED_SEEDS = 8        # ab --plot draws this many seeds' figures at most (each is one PNG)
MAX_VARIANTS = 64        # variants in one A/B: each is a lane stepped at every step of every seed, its own share of
                         # a free-mode UNet call and its own table; README's widest A/B has 4


def variant_list(text):
    names = split_specs(text)
    if len(names) < 2:
        raise argparse.ArgumentTypeError(f"--variants needs at least two comma-separated variants, got {text!r}")
    if len(names) > MAX_VARIANTS:
        raise argparse.ArgumentTypeError(f"--variants takes at most {MAX_VARIANTS} variants (each a lane of every "
                                         f"step), got {len(names)}")
    return names


def clip(text):
    choices = {"config": None, "on": True, "off": False}
    if text not in choices:
        raise argparse.ArgumentTypeError(f"--clip must be one of {', '.join(choices)}, got {text!r}")
    return choices[text]


def file_safe(spec: str) -> str:
    """A variant spec as a shell-safe file-name part: `ddim(eta=1.0)` → `ddim-eta-1.0` (letters,
    digits, `.`, `_` and `-` only)."""
    return re.sub(r"[^A-Za-z0-9._]+", "-", spec).strip("-") or "variant"


class ABCommand(Command):
    """Compare step variants on --model's UNet and scheduler (`ppddpm.analysis.ab.compare`)."""

    @classmethod
    def register_subcommand(cls, commands):
        p = commands.add_parser("ab", help="A/B-compare step variants; print the table, write ab.json (and plots)")
        options.add_model(p)
        p.add_argument("--variants", type=variant_list, default=["posterior", "direct"],
                       help='comma-separated specs, the first is the reference: "posterior,direct" (default) or '
                            '"ppdiffusers,ddim(eta=1.0, use_clipped_model_output=True)"')
        options.add_seed_list(p, "an integer, a comma-separated list or a range (0-15): a distribution over seeds")
        options.add_steps(p)
        options.add_batch_size(p, "samples per seed")
        p.add_argument("--mode", choices=["shadow", "free"], default="shadow",
                       help="shadow: every variant steps the reference's (x_t, ε̂, z); free: each its own trajectory")
        p.add_argument("--clip", type=clip, default=None,
                       help="x̂_0 clipping: config, on or off (default: config, the model's clip_sample)")
        p.add_argument("--rows", type=options.positive("--rows"), default=20, help="table rows per variant")
        p.add_argument("--seed-batch", type=options.int_at_least(1, "--seed-batch", options.MAX_BATCH,
                                                                  " (seeds in one UNet call)"), default=4,
                       help="seeds per batched UNet call (default 4); --nproc splits the seeds by these groups")
        p.add_argument("--plot", action="store_true",
                       help=f"also write ab_<variant>.png (with several seeds: ab_<variant>_seed<S>.png for each of "
                            f"the first {PLOTTED_SEEDS})")
        options.add_out(p, "runs/ab", "folder for ab.json and the plots")
        options.add_quiet(p)
        options.add_launch(p)
        p.set_defaults(func=cls)

    def run(self):
        args = self.args
        for name in args.variants:          # fail before loading a model
            get_variant(name)
        distinct_seeds(args)
        images = self._images_per_call()
        declared_checks(args)
        out = output_folder(args)           # a bad or busy --out fails before the model loads
        refuse_overwrite(args, out / "ab.json", " — an earlier A/B report")
        pipe = load_model(args, images)
        report = compare(pipe, args.variants, seed=args.seed, num_inference_steps=args.steps,
                         batch_size=args.batch_size, mode=args.mode, clip_sample=args.clip,
                         progress=cli_choice(args.quiet), seed_batch=args.seed_batch)
        if not is_lead():
            return None
        print(report.table(rows=args.rows))
        report.to_json(out / "ab.json")
        written = [out / "ab.json"]
        if args.plot:
            written += plots(report, out)
        print("wrote " + ", ".join(map(str, written)))
        return None

    def _images_per_call(self) -> int:
        """Images in one UNet call — the seeds of a --seed-batch group × --batch-size, times the
        variants in free mode (every lane its own x_t) — at most MAX_BATCH, like --batch-size."""
        args = self.args
        seeds = min(args.seed_batch, len(args.seed) if isinstance(args.seed, list) else 1)
        lanes = len(args.variants) if args.mode == "free" else 1
        images = lanes * seeds * args.batch_size
        if images > options.MAX_BATCH:
            raise BadValue(f"{f'{lanes} variants (--mode free) × ' if lanes > 1 else ''}{seeds} seeds (--seed-batch) × "
                           f"--batch-size {args.batch_size} make {images} images in one UNet call; at most "
                           f"{options.MAX_BATCH}: lower --seed-batch or --batch-size")
        return images


def plots(report, out) -> list:
    """ab --plot: one figure per variant and seed (the first PLOTTED_SEEDS seeds), named without
    characters a shell would read: ab_<variant>.png for one seed, ab_<variant>_seed<S>.png for several."""
    names, written = {}, []
    for v in report.others:
        name = file_safe(v)
        names[v] = name if name not in names.values() else f"{name}-{len(names)}"
    shown = report.seeds[:PLOTTED_SEEDS]
    for v in report.others:
        for k, seed in enumerate(shown):
            path = out / (f"ab_{names[v]}.png" if len(report.seeds) == 1 else f"ab_{names[v]}_seed{seed}.png")
            plotting.plot_ab(report, v, seed_index=k, save=path)
            written.append(path)
    if len(report.seeds) > len(shown):
        print(f"plotted seeds {seed_span(shown)} of {len(report.seeds)} (--plot draws the first {PLOTTED_SEEDS}; "
              f"every seed's numbers are in ab.json)")
    return written
