"""`ppddpm` command line (also `python -m ppddpm`): a thin layer over the API.

Each subcommand is a class in its own module of `ppddpm.cli` (`ppddpm.cli.command.Command`, as
diffusers' `commands/`), with its options next to its code; options several commands share are
declared once in `ppddpm.cli.options`. Every subcommand writes into `--out`; bad input ends in one
line on stderr and exit 2.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import os
import sys
import traceback

from ppddpm import __version__
from ppddpm.cli import launch, nodes
from ppddpm.core import ranks
from ppddpm.core.distributed import leave
from ppddpm.cli.ab import ABCommand
from ppddpm.cli.animate import AnimateCommand
from ppddpm.cli.bpd import BpdCommand
from ppddpm.cli.demo import DemoCommand
from ppddpm.cli.eval import EvalCommand
from ppddpm.cli.forward import ForwardCommand
from ppddpm.cli.grid import GridCommand
from ppddpm.cli.patches import PatchesCommand
from ppddpm.cli.sample import SampleCommand
from ppddpm.cli.schedule import ScheduleCommand
from ppddpm.cli.signals import command_of, interrupt_status, sigterm_raises, stopped
from ppddpm.cli.train import TrainCommand
from ppddpm.cli.upstream import UpstreamCommand
from ppddpm.cli.verify import VerifyCommand
from ppddpm.cli.view import ViewCommand
from ppddpm.errors import BadValue, InputError

# in the order `ppddpm --help` lists them
COMMANDS = (SampleCommand, ABCommand, PatchesCommand, UpstreamCommand, TrainCommand, EvalCommand, BpdCommand,
            GridCommand, ForwardCommand, ScheduleCommand, AnimateCommand, ViewCommand, VerifyCommand, DemoCommand)

_WRITE_ERRNOS = {getattr(errno, n) for n in ("ENOSPC", "EDQUOT", "EFBIG", "EROFS") if hasattr(errno, n)}  # the disk


class _DefaultsOnce(argparse.HelpFormatter):
    """Every option's help ends with its default — `(default: 1000)`, a list as `32 64` — unless
    the text already says it in words ("default: the model's own"), so no default is shown twice.
    Flags (store_true) have none to show."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or any(action.default is v for v in (None, False, argparse.SUPPRESS)) \
                or not action.option_strings:
            return text
        shown = " ".join(map(str, action.default)) if isinstance(action.default, (list, tuple)) else action.default
        return f"{text} (default: {str(shown).replace('%', '%%')})"


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (`ppddpm sample: error: ...`), exit 2, and every
    option's --help line shows its default (once)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _DefaultsOnce)
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def parse_args(self, args=None, namespace=None):
        """As argparse's, but words no option took are reported by the command they came with (argparse
        leaves them to the top-level parser: `ppddpm: error: …`, pointing at the wrong --help)."""
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            command = getattr(parsed, "command", None)
            prog = f"{self.prog} {command}" if command else self.prog
            self.exit(2, f"{prog}: error: unrecognized arguments: {' '.join(extras)} (see {prog} --help)\n")
        return parsed


def build_parser():
    """The `ppddpm` parser: one subparser per command of COMMANDS, each registered by its class."""
    parser = _Parser(prog="ppddpm", description="Watch diffusion sampling work, step by step (ppdiffusers).")
    parser.add_argument("--version", action="version", version=f"ppddpm {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True
    for command in COMMANDS:
        command.register_subcommand(commands)
    return parser


def main(argv=None):
    """The command line; while it runs, SIGTERM stops it as Ctrl-C does (`Terminated`, also while
    paddle imports: `ppddpm.cli.signals`), and a reader that closes the pipe (`ppddpm verify RUN |
    head`) ends it quietly with 141 (128 + SIGPIPE)."""
    with sigterm_raises(command_of(sys.argv[1:] if argv is None else argv)):
        try:
            status = _main(argv)
            sys.stdout.flush()               # a closed pipe shows here, inside this handler, not at exit
            return status
        except BrokenPipeError:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())     # no second error at exit's flush
            return 141
        except KeyboardInterrupt as exc:     # outside a command's run (which says it itself): while parsing
            print(f"{command_of(sys.argv[1:] if argv is None else argv)}: {stopped(exc)}", file=sys.stderr)
            return interrupt_status(exc)


def _main(argv):
    args = build_parser().parse_args(argv)
    if hasattr(args, "nproc") and not ranks.launched() and (args.nproc > 1 or args.ips or nodes.given(args)):
        return _launch(args, argv)
    rank = launch.RankOutput().start()
    if rank.folder is not None:
        args.quiet = True                # a rank's progress bar would only fill its log
    try:
        status = _dispatch(args)
    except SystemExit as exc:
        if rank.folder is None:
            raise
        status = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        if rank.folder is None:
            raise
        traceback.print_exc()            # a real bug in a rank: its traceback is what the parent prints
        status = 1
    if rank.folder is not None and status == 0:
        leave()     # every rank is done before any exits (`ppddpm.cli._launched`); a failed rank leaves at once:
                    # the others may be waiting at another point of the command, and the launch is ending anyway
    return rank.finish(status)


def _launch(args, argv) -> int:
    """`--nproc N`: the ranks' job, ended as one on Ctrl-C / SIGTERM (`ppddpm.cli.launch`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        alone = nodes.given(args) if args.ips is None else []
        if alone:
            raise BadValue(f"{', '.join(alone)} {'goes' if len(alone) == 1 else 'go'} only with --ips (the nodes of a "
                           f"multi-node run)")
        node = nodes.here(args) if args.ips else None    # this node's address, before paddle loads
        launch.check_nproc(args.nproc, args.oversubscribe)
        return nodes.run(args, argv, node) if node else launch.run(args.nproc, argv, out=getattr(args, "out", None))
    except KeyboardInterrupt as exc:
        print(f"ppddpm {args.command}: {stopped(exc)}; the {args.nproc} ranks were stopped before any of them "
              f"wrote more", file=sys.stderr)
        return interrupt_status(exc)
    except InputError as exc:
        print(f"ppddpm {args.command}: error: {exc}", file=sys.stderr)
        return 2


def _dispatch(args) -> int:
    """Run the command of `args`; bad input (`ppddpm.errors.InputError`) and a full disk become one line
    and exit 2, Ctrl-C / SIGTERM one line and 130 / 143; anything else is a bug and keeps its traceback."""
    try:
        with contextlib.ExitStack() as held:     # what the command holds until it ends (--out's lock)
            args._hold = held.enter_context
            status = args.func(args).run()   # an int is the command's own exit status (verify: 1 when a step departs)
    except KeyboardInterrupt as exc:
        print(f"ppddpm {args.command}: {stopped(exc)}", file=sys.stderr)
        return interrupt_status(exc)
    except InputError as exc:            # raised on purpose for bad input; anything else is a bug and stays loud
        rank = getattr(exc, "rank", None)
        print(f"ppddpm {args.command}: error: {exc}" + (f" (rank {rank})" if rank else ""), file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno not in _WRITE_ERRNOS:
            raise
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"ppddpm {args.command}: error: writing the output failed: {exc.strerror or exc}{where}; files saved "
              f"before are intact (saves are atomic) — free space or choose another --out", file=sys.stderr)
        return 2
    return status if isinstance(status, int) else 0


if __name__ == "__main__":
    sys.exit(main())
