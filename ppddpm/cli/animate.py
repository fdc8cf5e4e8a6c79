"""`ppddpm animate`: a trajectory as an animated GIF (and MP4 where OpenCV is installed)."""
from __future__ import annotations

import argparse

from ppddpm.cli import options
from ppddpm.cli.command import Command
from ppddpm.cli.common import output_folder
from ppddpm.pictures import plotting
from ppddpm.storage.format import DECODED_SUFFIX, FIELDS, GUIDANCE_FIELDS, known_field
from ppddpm.storage.trajectory import Trajectory


def field_name(text):
    """--field: a name a trajectory can record, refused at once otherwise (whether this run recorded it
    is checked when it loads, before any picture is drawn)."""
    if not known_field(text):
        raise argparse.ArgumentTypeError(f"--field takes a recorded field: {', '.join(FIELDS)} (latent runs: also "
                                         f"{', '.join(GUIDANCE_FIELDS)}, and NAME{DECODED_SUFFIX}), got {text!r}")
    return text


class AnimateCommand(Command):
    """<field>.gif: one recorded field of one sample of the batch, step by step."""

    @classmethod
    def register_subcommand(cls, commands):
        p = commands.add_parser("animate", help="a trajectory as an animated GIF (and MP4 where OpenCV is installed)")
        p.add_argument("run", help="a trajectory .npz or streamed folder")
        p.add_argument("--field", type=field_name, default="prev_sample",
                       help="the recorded field to animate: prev_sample (x_t), pred_original_sample (x̂_0), …")
        p.add_argument("--index", type=options.nonneg("--index"), default=0, help="which sample of the batch")
        p.add_argument("--fps", type=options.positive_float("--fps", high=plotting.MAX_FPS,
                                                             what=" (more is not seen: GIF players floor a frame "
                                                                  "at 20 ms, screens show 60 a second)"),
                       default=10.0, help="frames a second")
        p.add_argument("--every", type=options.positive("--every"), default=None,
                       help=f"every N-th recorded step (and the last) (default: at most {plotting.MAX_FRAMES} frames "
                            f"spread over the run; --every 1 for every recorded step)")
        p.add_argument("--hold", type=options.positive_float("--hold", zero=True, high=plotting.MAX_HOLD,
                                                              what=" seconds (the MP4 repeats the last frame hold × "
                                                                   "fps times)"), default=2.0,
                       help="seconds the final image stays before the loop restarts")
        options.add_out(p, "runs/animate", "folder for <field>.gif (and .mp4)", force=False)
        p.set_defaults(func=cls)

    def run(self):
        args = self.args
        traj = Trajectory.load(args.run)
        written = plotting.animate(traj, output_folder(args) / f"{args.field}.gif", field=args.field,
                                   index=args.index, fps=args.fps, every=args.every, hold=args.hold)
        shown = len(plotting.frame_steps(len(traj), args.every))
        print("wrote " + ", ".join(map(str, written)) + f" ({shown} frames of {len(traj)} recorded steps"
              + ("" if shown == len(traj) else "; --every 1 for every one") + ")")
