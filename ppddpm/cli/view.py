"""`ppddpm view`: an explorer to scrub through a run, one self-contained HTML file."""
from __future__ import annotations

import os
from pathlib import Path

from ppddpm._io import output_file
from ppddpm.cli import options
from ppddpm.cli.command import Command
from ppddpm.errors import BadValue
from ppddpm.pictures.explorer import explore


class ViewCommand(Command):
    """The page of `ppddpm.pictures.explorer.explore`: a run, optionally beside a second run or an A/B curve."""

    @classmethod
    def register_subcommand(cls, commands):
        p = commands.add_parser("view", help="an explorer to scrub through a run: one self-contained HTML file")
        p.add_argument("run", help="a trajectory .npz or streamed folder (record with --all-fields to see every pane)")
        p.add_argument("--with", dest="other", default=None,
                       help="a second run of the same steps, shown side by side (default: none)")
        p.add_argument("--ab", default=None,
                       help="an ab.json (ppddpm ab) whose |Δ| curve is drawn with a cursor (default: none)")
        options.add_out(p, "runs/view.html", "the page to write", force=False)
        p.set_defaults(func=cls)

    def run(self):
        args = self.args
        out = Path(args.out)
        if out.suffix.lower() not in (".html", ".htm"):
            raise BadValue(f"--out names the page: a file ending in .html, got {args.out!r}")
        output_file(out, "--out")             # a folder there, a file among its parents, a name too long: one line
        if args.ab and args.other:
            raise BadValue("give --ab or --with, not both")
        if args.ab and not os.path.exists(args.ab):          # False on any OSError (a name too long, …)
            raise BadValue(f"no A/B report at {args.ab} (write one with ppddpm ab --out DIR: DIR/ab.json)")
        view = explore(args.run, other=args.other, ab=args.ab)
        view.save(out)
        print(f"wrote {out} ({view.size}, self-contained: open it in any browser, offline)")
