"""`ppddpm verify`: replay a recorded run through the float64 reference of its sampler."""
from __future__ import annotations

from ppddpm._io import output_file
from ppddpm.analysis.verify import save_json, verify
from ppddpm.cli.command import Command


class VerifyCommand(Command):
    """The per-step table of `ppddpm.analysis.verify.verify`; exit 0 when every step holds and the file is what
    it says, 1 when a step departs or a claim of the file does not hold (with --strict, also when something
    could not be checked)."""

    @classmethod
    def register_subcommand(cls, commands):
        p = commands.add_parser("verify", help="replay a recorded run through the float64 reference of its sampler "
                                               "(exit 0: every step holds, 1: one departs or the file is not what it "
                                               "says)")
        p.add_argument("run", help="a trajectory .npz or streamed folder recorded with --all-fields")
        p.add_argument("--json", default=None, help="also write the per-step report to this JSON file")
        p.add_argument("--strict", action="store_true",
                       help="exit 1 also when something could not be checked (x_T or x̂_0 not recorded, steps "
                            "between recorded ones, an unknown scheduler class or step formula, an incomplete run)")
        p.set_defaults(func=cls)

    def run(self) -> int:
        if self.args.json:
            output_file(self.args.json, "--json")         # a bad name fails before the replay, not after
        report = verify(self.args.run)
        print(report.table())
        if self.args.json:
            print(f"wrote {save_json(report, self.args.json)}")
        return 0 if (report.ok_strict if self.args.strict else report.ok) else 1
