"""`ppddpm schedule`: β_t, ᾱ_t, SNR and the eq. (7) coefficients of a model's scheduler."""
from __future__ import annotations

from ppddpm.cli import options
from ppddpm.cli.command import Command
from ppddpm.cli.common import output_folder
from ppddpm.model.loading import load_pipeline
from ppddpm.pictures import plotting


class ScheduleCommand(Command):
    """schedule.png: the noise schedule of --model's scheduler."""

    @classmethod
    def register_subcommand(cls, commands):
        p = commands.add_parser("schedule", help="β_t, ᾱ_t, SNR and the eq. (7) coefficients of a model's scheduler")
        options.add_model(p)
        options.add_out(p, "runs/schedule", "folder for schedule.png", force=False)
        p.set_defaults(func=cls)

    def run(self):
        path = output_folder(self.args) / "schedule.png"
        plotting.plot_schedule(load_pipeline(self.args.model, trust_pickle=self.args.trust_pickle).scheduler,
                               save=path)
        print(f"wrote {path}")
