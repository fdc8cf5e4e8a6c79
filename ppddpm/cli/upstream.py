"""`ppddpm upstream`: ppdiffusers' own scheduler tests with ppddpm installed, against a stock run."""
from __future__ import annotations

from ppddpm.analysis.upstream import SUITES, known_failure, run_scheduler_suite
from ppddpm.cli.command import Command
from ppddpm.errors import BadValue
from ppddpm.variants.registry import get_variant


class UpstreamCommand(Command):
    """Run a sampler family's ppdiffusers test suite twice — stock, and with ppddpm's observer (or a
    DDPM step variant) installed class-wide — and fail on a test only the stock run passes."""

    @classmethod
    def register_subcommand(cls, commands):
        p = commands.add_parser("upstream", help="run ppdiffusers' own scheduler tests with ppddpm's observer (or a "
                                                 "DDPM variant) installed class-wide, against a stock run")
        p.add_argument("--scheduler", default="ddpm", choices=list(SUITES),
                       help="which sampler family's suite (default: ddpm)")
        p.add_argument("--variant", default=None,
                       help="with --scheduler ddpm: patch this step variant in instead of observing (e.g. posterior; "
                            "default: observe only)")
        p.set_defaults(func=cls)

    def run(self):
        args = self.args
        if args.variant is not None:
            get_variant(args.variant)                  # an unknown name fails here, before any test runs
            if args.scheduler != "ddpm":
                raise BadValue(f"--variant patches DDPMScheduler; use it with --scheduler ddpm, not "
                               f"{args.scheduler!r}")
        label, suite = args.variant or "observed", SUITES[args.scheduler]
        print(f"running ppdiffusers' {suite[1]} twice, stock and {label} (about half a minute) …", flush=True)
        stock = run_scheduler_suite(family=args.scheduler)
        other, steps = run_scheduler_suite(args.variant, family=args.scheduler, observe=args.variant is None,
                                           with_count=True)
        how = "variant patched into DDPMScheduler" if args.variant else f"ppddpm observer on {suite[0]}"
        print(f"ppdiffusers' {suite[1]}: stock vs {label} ({how}; {steps} steps went through ppddpm)")
        print(f"{'ppdiffusers test':55s} {'stock':8s} {label}")
        regressions = []
        for name in sorted(stock):
            note = known_failure(args.scheduler, name) if stock[name] != "passed" else ""
            print(f"{name:55s} {stock[name]:8s} {other.get(name, '-'):8s} {note}")
            if stock[name] == "passed" and other.get(name) != "passed":
                regressions.append(name)
        if regressions:
            raise BadValue(f"{label} fails tests the stock run passes: {', '.join(regressions)}")
