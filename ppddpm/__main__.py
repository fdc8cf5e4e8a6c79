"""`python -m ppddpm` and the `ppddpm` command (setup.py's console script `run`): the command line,
with Ctrl-C and SIGTERM handled from its first moment — before the command modules load — as
`ppddpm.cli.main.main` handles them later (one line, exit 130 / 143; `ppddpm.cli.signals`)."""
import sys

from ppddpm.cli.signals import block_until_loaded, command_of, interrupt_status, sigterm_raises, stopped, unblock


def run(argv=None) -> int:
    """`ppddpm.cli.main.main(argv)`, with the signals held back while its modules load."""
    mask = block_until_loaded()
    command = command_of(sys.argv[1:] if argv is None else argv)
    with sigterm_raises(command):
        try:
            from ppddpm.cli.main import main  # lazy: loaded with the signals held back (block_until_loaded)
            unblock(mask)                    # a signal that came while loading is raised here
        except KeyboardInterrupt as exc:
            print(f"{command}: {stopped(exc)}", file=sys.stderr)
            return interrupt_status(exc)
        return main(argv)


if __name__ == "__main__":
    sys.exit(run())
