"""`ppddpm forward`: the forward process q(x_t|x_0) on an image, every 50 steps."""
from __future__ import annotations

from ppddpm.cli import options
from ppddpm.cli.command import Command
from ppddpm.cli.common import declared_checks, output_folder, pixel_pipeline
from ppddpm.model.loading import load_pipeline
from ppddpm.pictures import plotting


class ForwardCommand(Command):
    """forward.png: an image noised by --model's scheduler (eq. 4) at every N-th timestep."""

    @classmethod
    def register_subcommand(cls, commands):
        p = commands.add_parser("forward", help="the forward process q(x_t|x_0) on an image, every 50 steps")
        options.add_model(p)
        p.add_argument("--image", default="digit",
                       help="'digit', 'digit0'…'digit9' (the first held-out digit of that class) or an image path")
        p.add_argument("--every", type=options.positive("--every"), default=50, help="a tile every N timesteps")
        options.add_out(p, "runs/forward", "folder for forward.png", force=False)
        p.set_defaults(func=cls)

    def run(self):
        declared_checks(self.args, pixel_only="ppddpm forward")       # before paddle loads
        pipe = pixel_pipeline(load_pipeline(self.args.model, trust_pickle=self.args.trust_pickle), "ppddpm forward")
        res = pipe.unet.config.sample_size
        image = plotting.load_image(self.args.image, resolution=res if isinstance(res, int) else None,
                                    channels=pipe.unet.config.in_channels)
        path = output_folder(self.args) / "forward.png"
        plotting.plot_forward(image, pipe.scheduler, every=self.args.every, save=path)
        print(f"wrote {path}")
