"""One `ppddpm` subcommand, as diffusers' `BaseDiffusersCLICommand`: a class that registers its own
options (`register_subcommand`) next to the code that runs it (`run`).

    class GridCommand(Command):
        @classmethod
        def register_subcommand(cls, commands):
            p = commands.add_parser("grid", help=...)
            p.add_argument(...)
            p.set_defaults(func=cls)          # `ppddpm grid …` makes GridCommand(args)

        def run(self):
            ...                               # None or 0: success; an int: the exit status

`ppddpm.cli.main` builds the parser from `COMMANDS` and runs `args.func(args).run()`.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Optional


class Command(ABC):
    """A subcommand: `register_subcommand(commands)` adds its parser to the `ppddpm` subparsers;
    an instance holds the parsed options (`self.args`) and `run()` does the work."""

    def __init__(self, args):
        self.args = args

    @classmethod
    @abstractmethod
    def register_subcommand(cls, commands):
        """Add this command's parser (with `set_defaults(func=cls)`) to `commands`, argparse's subparsers."""

    @abstractmethod
    def run(self) -> Optional[int]:
        """Do the command's work; an int return is its exit status (None: 0)."""
