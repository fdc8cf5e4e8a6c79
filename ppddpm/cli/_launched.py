"""What each rank of `ppddpm … --nproc N` runs (a script: paddle.distributed.launch starts files).
The command line comes in PPDDPM_RANK_ARGV (`ppddpm.cli.launch`).

Before anything loads, the rank leaves its pid in the scratch folder: paddle's launcher starts each
rank in a session of its own, out of reach of the parent's stop of the launcher's process group
(`ppddpm.cli.launch.stop_group` signals the ranks' groups too).

SIGTERM is held while paddle and paddlenlp load (paddlenlp's import removes paddle's handlers of
fatal signals by itself, and would remove faulthandler's too if it came later), then paddle's own
handlers are removed (`paddle.disable_signal_handler`) for Python's faulthandler, whose report of a fatal signal (the
Python stack of every thread) goes to stderr — paddle's workerlog.N. paddle's handlers are not
async-signal-safe: a SIGTERM that lands while the rank allocates memory deadlocks it in the
handler for ever (seen in gdb: `paddle::framework::SignalHandle` waiting on malloc's arena lock
that the interrupted malloc holds), a rank left behind that nothing stops but SIGKILL.

The rank leaves with `os._exit` once its status is written (`ppddpm.cli.main`: after a last barrier
of the ranks, `ppddpm.core.distributed.leave`): paddle's teardown at exit (its process groups and
gloo's connections, destroyed by an atexit hook) has nothing left to do for the command, and a
rank aborted there would fail a launch whose results are complete.
"""
import faulthandler
import json
import os
import signal
import sys

_pid = os.path.join(os.environ["PPDDPM_RANK_OUTPUT"], f"rank{os.environ['PADDLE_TRAINER_ID']}.pid")
with open(_pid + ".part", "w") as pid:
    pid.write(str(os.getpid()))
os.replace(_pid + ".part", _pid)       # whole or absent: the parent's stop never reads a half-written pid
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})

import paddle  # noqa: E402  (with SIGTERM held: paddle's handler is in place until the line below)
import paddlenlp  # noqa: E402, F401  (its import calls paddle.disable_signal_handler(), which would undo faulthandler's)

from ppddpm.cli.main import main  # noqa: E402

paddle.disable_signal_handler()
faulthandler.enable()
signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})   # one that came meanwhile ends the rank now

status = main(json.loads(os.environ["PPDDPM_RANK_ARGV"]))
sys.stdout.flush()
sys.stderr.flush()
os._exit(status)
