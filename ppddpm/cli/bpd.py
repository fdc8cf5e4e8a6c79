"""`ppddpm bpd`: a model's variational bound on held-out digits, term by term, in bits/dim (`ppddpm.likelihood`)."""
from __future__ import annotations

from pathlib import Path

from ppddpm._progress import cli_choice
from ppddpm.analysis.likelihood import MAX_LEVELS, bpd, draw_timesteps
from ppddpm.analysis.metrics import HELD_OUT_DIGITS
from ppddpm.cli import options
from ppddpm.cli.command import Command
from ppddpm.cli.common import declared_checks, load_model, pixel_pipeline, refuse_overwrite
from ppddpm.core.bound import bound_tables
from ppddpm.errors import BadValue
from ppddpm.model.data import load_digits
from ppddpm.model.objective import DIGIT_LEVELS
from ppddpm.pictures.objective import plot_vlb


class BpdCommand(Command):
    """`bpd` of --model on the first --n held-out digits; prints the report's table, writes --json and --plot.
    Every check (the model's scheduler, the images' range and levels, --timesteps) runs before any UNet call,
    and the files are written only when the bound is done."""

    @classmethod
    def register_subcommand(cls, commands):
        p = commands.add_parser("bpd", help="the variational bound (bits/dim) on held-out digits, term by term")
        options.add_model(p)
        p.add_argument("--n", type=options.int_at_least(1, "--n", HELD_OUT_DIGITS, " (the held-out digits)"),
                       default=64, help="held-out digits to measure on (the first N of the test split)")
        p.add_argument("--timesteps", type=options.positive("--timesteps"), default=None,
                       help="estimate the sum over t from K timesteps drawn uniformly (x T/K; its standard error is "
                            "stated) at K/T of the cost (default: all T)")
        p.add_argument("--levels", type=options.int_at_least(2, "--levels", MAX_LEVELS), default=DIGIT_LEVELS,
                       help="the data's quantisation levels, bins of half-width 1/(levels-1) in [-1, 1]; the digits "
                            "have 17")
        options.add_first_seed(p, "seed of the noise of each x_t and of the timestep draw")
        options.add_batch_size(p, "images per UNet call", default=256)
        p.add_argument("--json", default=None, help="write the report (every term of every image) as JSON here")
        p.add_argument("--plot", default=None, help="write plot_vlb's picture (PNG) here")
        p.add_argument("--force", action="store_true", help="overwrite an existing --json or --plot file")
        options.add_quiet(p)
        p.set_defaults(func=cls)

    def run(self):
        args = self.args
        targets = [Path(p) for p in (args.json, args.plot) if p]
        for path in targets:
            _writable(path)
            refuse_overwrite(args, path)
        declared = declared_checks(args, pixel_only="ppddpm bpd")        # what --model's files decide, before paddle
        if declared is not None and declared.num_train_timesteps and args.timesteps is not None:
            draw_timesteps(declared.num_train_timesteps, args.timesteps, args.seed)
        pipe = pixel_pipeline(load_model(args, images=min(args.n, args.batch_size)), "ppddpm bpd")
        T = bound_tables(pipe.scheduler).num_timesteps            # a scheduler that is not DDPM-like stops here
        draw_timesteps(T, args.timesteps, args.seed)
        size, channels = pipe.unet.config.sample_size, pipe.unet.config.in_channels
        if channels != 1:
            raise BadValue(f"ppddpm bpd measures on the held-out digits (1 channel); this model has {channels}")
        images = load_digits("test", int(size if isinstance(size, int) else size[0]))[:args.n]
        report = bpd(pipe, images, seed=args.seed, levels=args.levels, timesteps=args.timesteps,
                     batch_size=args.batch_size, progress=cli_choice(args.quiet))
        report.model = args.model or "bundled ddpm-digits-8"
        report.notes.append(f"the first {len(images)} held-out digits (test split of ppddpm.model.data)")
        print(report.table())
        if args.json:
            report.to_json(args.json)
            print(f"wrote {args.json}")
        if args.plot:
            plot_vlb(report, save=args.plot)
            print(f"wrote {args.plot}")


def _writable(path: Path) -> None:
    """A file --json / --plot can become: not a folder, in a folder that exists."""
    if path.is_dir():
        raise BadValue(f"{path} is a folder; give a file name")
    if not path.parent.is_dir():
        raise BadValue(f"{path.parent} does not exist; create it first or choose another path")
