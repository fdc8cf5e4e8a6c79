"""`ppddpm verify`: replay a recorded run through the float64 reference of its sampler."""
from __future__ import annotations

from ppddpm.analysis.verify import save_json, verify
from ppddpm.cli.command import Command


class VerifyCommand(Command):
    """The per-step table of `ppddpm.analysis.verify.verify`; exit 0 when every step holds, 1 when one departs."""

    @classmethod
    def register_subcommand(cls, commands):
        p = commands.add_parser("verify", help="replay a recorded run through the float64 reference of its sampler "
                                               "(exit 0: every step holds, 1: one departs)")
        p.add_argument("run", help="a trajectory .npz or streamed folder recorded with --all-fields")
        p.add_argument("--json", default=None, help="also write the per-step report to this JSON file")
        p.set_defaults(func=cls)

    def run(self) -> int:
        report = verify(self.args.run)
        print(report.table())
        if self.args.json:
            print(f"wrote {save_json(report, self.args.json)}")
        return 0 if report.ok else 1
