"""`ppddpm patches`: the article's source edits as diffs: list, check, apply --to DIR."""
from __future__ import annotations

from ppddpm.cli.command import Command
from ppddpm.errors import BadValue
from ppddpm.variants import source_patches


class PatchesCommand(Command):
    """List the diffs, check that they apply to the installed ppdiffusers, or apply them to a copy."""

    @classmethod
    def register_subcommand(cls, commands):
        p = commands.add_parser("patches", help="the article's source edits as diffs: list, check, apply --to DIR")
        p.add_argument("action", choices=["list", "check", "apply"])
        p.add_argument("names", nargs="*", help="patch names (default: all)")
        p.add_argument("--to", help="apply: a new folder for the patched copy of ppdiffusers (no default: required)")
        p.set_defaults(func=cls)

    def run(self):
        args = self.args
        if args.action == "list":
            for name in source_patches.available():
                print(f"{name:22s} {source_patches.describe(name)}")
        elif args.action == "check":
            result = source_patches.check(args.names or None)
            for name, status in result.items():
                print(f"{name:22s} {status}")
            if any(v != "ok" for v in result.values()):
                raise BadValue("some patches do not apply to the installed ppdiffusers (see above)")
        else:
            if not args.to:
                raise BadValue("patches apply needs --to DIR (a new folder; site-packages is never patched)")
            dest = source_patches.apply(args.to, args.names or None)
            print(f"patched copy of ppdiffusers in {dest}; use it with: import sys; sys.path.insert(0, {str(dest)!r})")
