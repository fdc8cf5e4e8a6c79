"""`ppddpm grid`: the article's grids (x_t, x̂_0 at t = 950, 900, …, 0) from a trajectory."""
from __future__ import annotations

from ppddpm.cli import options
from ppddpm.cli.command import Command
from ppddpm.cli.common import output_folder
from ppddpm.pictures import plotting
from ppddpm.storage.trajectory import Trajectory

NCOLS = options.int_at_least(1, "--ncols", plotting.MAX_NCOLS, " (tiles a row, each 0.9 in wide)")


class GridCommand(Command):
    """grid_x_t.png and grid_x0.png (the fields the run recorded) and trajectory.png (both side by side)."""

    @classmethod
    def register_subcommand(cls, commands):
        p = commands.add_parser("grid", help="the article's grids (x_t, x̂_0 at t = 950, 900, …, 0) from a trajectory")
        p.add_argument("run", help="a trajectory .npz (ppddpm sample) or a streamed trajectory folder, partial or not")
        spacing = p.add_mutually_exclusive_group()
        spacing.add_argument("--every-t", type=options.positive("--every-t"), default=None,
                             help=f"tiles every N in t, whatever the number of sampling steps "
                                  f"(default: {plotting.EVERY_T})")
        spacing.add_argument("--every", type=options.positive("--every"), default=None,
                             help="tiles every N sampling steps (instead of --every-t)")
        spacing.add_argument("--tiles", type=options.positive("--tiles"), default=None,
                             help="N tiles, evenly spaced (instead of --every-t)")
        p.add_argument("--ncols", type=NCOLS, default=10, help="tiles a row")
        options.add_out(p, "runs/grid", "folder for grid_x_t.png, grid_x0.png, trajectory.png", force=False)
        p.set_defaults(func=cls)

    def run(self):
        args = self.args
        traj = Trajectory.load(args.run)
        out = output_folder(args)
        written = []
        spacing = dict(every=args.every, every_t=args.every_t, tiles=args.tiles)   # none: plotting.EVERY_T
        if not traj.complete:
            print(f"{args.run}: a partial run ({len(traj)} steps recorded of {traj.meta.get('num_inference_steps')}); "
                  f"drawing the steps it has")
        for field, name in (("prev_sample", "grid_x_t.png"), ("pred_original_sample", "grid_x0.png")):
            if field in traj.fields:
                plotting.plot_grid(traj, field, ncols=args.ncols, save=out / name, **spacing)
                written.append(out / name)
        if {"prev_sample", "pred_original_sample"} <= set(traj.fields):
            plotting.plot_trajectory(traj, ncols=args.ncols, save=out / "trajectory.png", **spacing)
            written.append(out / "trajectory.png")
        print("wrote " + ", ".join(map(str, written)))
