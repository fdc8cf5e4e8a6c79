"""The `ppddpm` command line.

    main.py      the entry point (`ppddpm = ppddpm.cli.main:main`): the parser built from the commands,
                 the dispatch, and what every command shares at its end (exit codes, Ctrl-C, SIGTERM)
    command.py   `Command`: one subcommand, its options registered next to its `run`
    options.py   options several commands share (--model, --seed, --steps, --out/--force, …), declared once
    common.py    --out's folder, --force, loading --model with its checks, seeds, the lead rank
    signals.py   SIGTERM handled as Ctrl-C
    sample.py, ab.py, patches.py, upstream.py, train.py, eval.py, grid.py, forward.py, schedule.py,
    animate.py, view.py, verify.py, demo.py: one module per command
    launch.py, _launched.py: `--nproc N`; nodes.py: `--ips A,B` (one launch per node, the nodes held together)
"""
from ppddpm._lazy import submodules_on_access

__getattr__ = submodules_on_access(__name__)
