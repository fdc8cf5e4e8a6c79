"""The CLI's `--nproc N`: run the same command as N ranks under paddle.distributed.launch.

    ppddpm ab --seed 0-15 --nproc 2      # = python -m paddle.distributed.launch --nproc_per_node 2 \\
                                         #       …/ppddpm/cli/_launched.py   (argv: ab --seed 0-15)

The parent starts the launch (NCCL on GPUs; gloo on CPU, `PADDLE_DISTRI_BACKEND=gloo`) with
`--max_restart 0`, so a failing rank ends the job. Each rank runs the command (`ppddpm.core.distributed`
splits the work) with its stdout and stderr in files of a scratch folder, and its exit status
next to them. The parent then prints rank 0's output as its own and, if a rank failed, the
lowest failing rank's error, exiting with that rank's status (2 for bad input, as ever). Without
`--nproc` (or `--ips`, `ppddpm.cli.nodes`), nothing here runs. A launch that failed before
anything could come of it is started once more (`run`).

The job ends as one. The launcher runs in a session of its own, and paddle's launcher starts
each rank in another (`_launched` leaves each rank's pid in the scratch folder): on Ctrl-C or
SIGTERM the parent stops all of them (SIGTERM, then SIGKILL after a grace period) and waits for
them before it reports, so no rank writes after the command has said it failed. If the parent
itself dies (SIGKILL, a crashed shell), the kernel kills the launcher (PR_SET_PDEATHSIG) and
every rank notices within a second (`watch_parent`: a thread polling the parent's pid),
removes the scratch folder and exits. `--nproc` is bounded by the CPU cores (GPUs where there
are any) unless `--oversubscribe`.
"""
from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from ppddpm._io import LOCK_NAME
from ppddpm._moved import moved_names
from ppddpm.cli.signals import INTERRUPTED
from ppddpm.core import ranks
from ppddpm.errors import BadValue

OUTPUT_ENV = ranks.OUTPUT_VARIABLE      # a rank's scratch folder for its output and status
PARENT_ENV = "PPDDPM_PARENT_PID"        # the `ppddpm --nproc` process the ranks outlive by at most a second
GRACE_SECONDS = 5                       # between SIGTERM and SIGKILL when the job is stopped
KEEP_ENV = "PPDDPM_KEEP_SCRATCH"        # debugging: where to copy each launch's scratch folder
ARGV_ENV = "PPDDPM_RANK_ARGV"           # the ranks' command line, as JSON: launch's own parser would
                                        # take `--n` for its `--nnodes` if it came as arguments
LAUNCHER_LOG = "launcher.log"           # in the scratch folder: paddle's launcher's own output
# paddle's launcher lets these variables override the arguments it is given
# (launch/context/args_envs.py), and init_parallel_env takes MASTER_ADDR/PORT before the launcher's PADDLE_MASTER
LAUNCHER_OVERRIDES = ("POD_IP", "PADDLE_MASTER", "PADDLE_NNODES", "PADDLE_NPROC_PER_NODE", "PADDLE_RANK",
                      "PADDLE_LOG_DIR", "PADDLE_MAX_RESTART", "PADDLE_IPS", "PADDLE_START_PORT", "MASTER_ADDR",
                      "MASTER_PORT")


def backend_env() -> dict:
    """gloo where there is no GPU: paddle's default, NCCL, needs one. Without the variables by which
    paddle's launcher would override the arguments given to it (`LAUNCHER_OVERRIDES`)."""
    import paddle

    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_OVERRIDES}
    if not (paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0):
        env.setdefault("PADDLE_DISTRI_BACKEND", "gloo")
    return env


def run(nproc: int, argv: list, ips: str = None, out=None) -> int:
    """Run `ppddpm <argv>` as `nproc` ranks on this node; relay rank 0's output; return the exit status.
    `out`: the command's --out, whose listing tells whether a rank wrote anything before it died. `ips`
    (0.4's way to many nodes, which never worked): deprecated, the command is run with `--ips` instead.

    A launch that failed is started once more, with a one-line note on stderr, when a second one
    cannot repeat or undo anything (`_retry_note`): its ranks never all joined (`ranks.mark_joined`:
    none began the work), or a rank died without a status (a signal: paddle's gloo occasionally aborts
    a rank, more often on a loaded machine) before anything was written to `out`. Across nodes
    (`ppddpm.cli.nodes`) there is no second launch."""
    if ips:
        from ppddpm.cli.main import main     # lazy: main imports this module

        warnings.warn("ppddpm.cli.launch.run(ips=…) is deprecated: the nodes of a multi-node run meet in "
                      "ppddpm.cli.nodes; run the command with --ips (ppddpm.cli.main.main([…, '--ips', ips]))",
                      DeprecationWarning, stacklevel=2)
        ips = ips if isinstance(ips, str) else ",".join(map(str, ips))
        cut = argv.index("--") if "--" in argv else len(argv)
        return main([*argv[:cut], "--nproc", str(nproc), "--ips", ips, *argv[cut:]])
    for attempt in (1, 2):
        scratch = Path(tempfile.mkdtemp(prefix="ppddpm-launch-"))
        before = listing(out)
        try:
            returncode = wait(start(nproc, argv, scratch), scratch)
            note = _retry_note(scratch, range(nproc), returncode, before, listing(out)) if attempt == 1 else None
            if note:
                sys.stderr.write(f"ppddpm: the launch of {nproc} ranks failed (exit {returncode}) {note}; starting "
                                 f"it once more\n")
                continue
            return verdict(scratch, range(nproc), returncode).tell()
        finally:
            keep_for_debugging(scratch)
            shutil.rmtree(scratch, ignore_errors=True)


def start(nproc: int, argv: list, scratch: Path, launcher_args=(), env: dict = None) -> subprocess.Popen:
    """One paddle.distributed.launch of `nproc` ranks here, `scratch` their folder (the launcher's own
    output in LAUNCHER_LOG), in a session of its own; `launcher_args` go to paddle's launcher, `env`
    adds to the ranks' environment."""
    env = dict(backend_env(), **(env or {}))
    env[OUTPUT_ENV] = str(scratch)
    env[ARGV_ENV] = json.dumps(argv)       # --nproc included: a rank knows it is one (ranks.launched)
    env[PARENT_ENV] = str(os.getpid())
    cmd = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", str(nproc), "--max_restart", "0",
           "--log_dir", str(scratch / "log"), *launcher_args, str(Path(__file__).with_name("_launched.py"))]
    with open(scratch / LAUNCHER_LOG, "w") as log:
        return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=_die_with_parent)


def wait(launched: subprocess.Popen, scratch: Path) -> int:
    """The launch's exit status; on Ctrl-C or SIGTERM (cli.Terminated) the job ends with us."""
    try:
        return launched.wait()
    except BaseException:
        stop_group(launched, scratch=scratch)
        raise


def joined(scratch: Path, here: range) -> bool:
    """Every rank in `here` is past paddle's rendezvous (`ranks.mark_joined`)."""
    return all((scratch / f"rank{r}.joined").exists() for r in here)


def _statuses(scratch: Path, here: range) -> dict:
    """rank → the exit status it wrote (`RankOutput.finish`), for the ranks in `here` that wrote one."""
    return {r: int((scratch / f"rank{r}.rc").read_text() or 1) for r in here if (scratch / f"rank{r}.rc").exists()}


def _retry_note(scratch: Path, here: range, returncode: int, before: dict, after: dict):
    """Why a second launch is safe, as the note says it; None when it is not (the launch succeeded,
    a rank ended with its own verdict, or a result was written).

    - The ranks never all joined and none ended with its own verdict: success (0) or bad input (2),
      which a second launch would only repeat. A rank that ended otherwise was stopped by the
      launcher when another died (143), or lost its peer while joining (1).
    - Or, at any later stage, a rank died without a status (a signal) and no rank ended with bad
      input, while `--out` holds nothing it did not hold before (`listing`; files removed by --force
      do not count)."""
    status = _statuses(scratch, here)
    if returncode == 0 or 2 in status.values():
        return None
    if not any(scratch.glob("rank*.joined")) and 0 not in status.values():
        return "before its ranks had all joined, so before any work"
    died = [r for r in here if r not in status]
    if died and all(before.get(name) == stamp for name, stamp in after.items()):
        return (f"after its ranks had joined: rank {', '.join(map(str, died))} died without a status (a signal) "
                f"before any result was written")
    return None


def listing(out) -> dict:
    """The files under `out` (a folder, or None), each as (size, modification time): what a launch
    wrote there shows as a new or changed entry. The lock and atomic saves' partial files are left out."""
    found = {}
    if out is None or not Path(out).is_dir():
        return found
    for folder, _, files in os.walk(out):
        for name in files:
            if name == LOCK_NAME or (name.startswith(".") and ".part" in name):
                continue
            path = os.path.join(folder, name)
            with contextlib.suppress(OSError):
                info = os.stat(path)
                found[path] = (info.st_size, info.st_mtime_ns)
    return found


def keep_for_debugging(scratch: Path):
    """PPDDPM_KEEP_SCRATCH=<dir>: a copy of the launch's scratch folder (the ranks' output, paddle's
    workerlog.N) goes there before it is removed."""
    keep = os.environ.get(KEEP_ENV)
    if keep:
        try:
            shutil.copytree(scratch, Path(keep) / scratch.name, dirs_exist_ok=True)
        except OSError as exc:                 # a debugging aid: never in the way of the job's own outcome
            sys.stderr.write(f"ppddpm: could not keep the launch's folder in {keep}: {exc}\n")


@dataclass
class Verdict:
    """How a node's launch ended: the exit status, what goes to stdout (the first rank's output) and
    to stderr (a failure's lines); `whole` when every rank said how it ended."""
    status: int
    out: str = ""
    err: str = ""
    whole: bool = True

    def tell(self) -> int:
        sys.stdout.write(self.out)
        sys.stderr.write(self.err)
        return self.status


def verdict(scratch: Path, here: range, returncode: int) -> Verdict:
    """The outcome of the ranks `here` (this node's): the first one's output; a rank's refusal of bad
    input (status 2) if one refused, even when the launcher then stopped another before it could say
    the same; the lowest failing rank's error and status when every rank reported one (a rank that
    failed on its own before one that was stopped — by the launcher, once another had failed); else
    (a rank died without a word) the launch's own failure, with what each rank did."""
    status = _statuses(scratch, here)
    first = scratch / f"rank{here[0]}.out"
    out = first.read_text() if first.exists() else ""
    failed = sorted(r for r, rc in status.items() if rc != 0)
    failed = [r for r in failed if status[r] not in INTERRUPTED] or failed   # not one the launcher then stopped
    refused = [r for r in failed if status[r] == 2]
    if refused:                                 # bad input: every rank checks the same, whatever became of the others
        return Verdict(2, out, (scratch / f"rank{refused[0]}.err").read_text())
    if failed and len(status) == len(here):     # every rank said how it ended: the lowest failure is the verdict
        return Verdict(status[failed[0]], out, (scratch / f"rank{failed[0]}.err").read_text())
    if len(status) < len(here):                 # a rank died unheard (the others were stopped, or lost it)
        log = scratch / LAUNCHER_LOG
        tail = "\n".join((log.read_text() if log.exists() else "").splitlines()[-20:])
        return Verdict(returncode or 1, out, f"ppddpm: the launch of {len(here)} ranks failed (exit {returncode}) "
                                             f"before every rank finished; its last lines:\n{tail}\n"
                                             f"{_ranks_said(scratch, here, status)}", whole=False)
    if returncode != 0:                         # after every rank's command had ended well: its results stand
        return Verdict(0, out, f"ppddpm: note: the launch of {len(here)} ranks ended with exit {returncode} after "
                               f"every rank had finished its command (status 0); the results are complete\n")
    return Verdict(0, out)


def _ranks_said(scratch: Path, here: range, status: dict) -> str:
    """For a launch that failed: which ranks joined and ended (`status`: rank → its exit status, as
    `verdict` read them), and the last lines each wrote to stderr (paddle's own log of each,
    `workerlog.N`, is in the launch's lines above for the rank that failed)."""
    lines = []
    for r in here:
        err = scratch / f"rank{r}.err"
        said = err.read_text().strip().splitlines()[-5:] if err.exists() else []
        lines.append(f"rank {r}: {'joined' if (scratch / f'rank{r}.joined').exists() else 'never joined'}, "
                     f"{f'status {status[r]}' if r in status else 'no status (killed?)'}"
                     + "".join(f"\n  {line}" for line in said))
    return "\n".join(lines) + "\n"


def stop_group(proc, grace: float = GRACE_SECONDS, scratch: Path = None):
    """End a launch: the launcher's process group and every rank's — paddle's launcher starts each rank
    in a session of its own, so the launcher's group does not hold them; `_launched` leaves each rank's
    pid in `scratch` — with SIGTERM, then SIGKILL after `grace` s; return once none is left."""
    groups = [proc.pid] + [pid for pid in (_pid_in(p) for p in (scratch.glob("rank*.pid") if scratch else ()))
                           if pid > 0]          # never 0: killpg(0) is the caller's own group
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for group in groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, sig)
        deadline = time.time() + grace
        try:
            proc.wait(timeout=grace)
            for group in groups:
                _wait_group_gone(group, deadline)
            return
        except subprocess.TimeoutExpired:
            continue


def _pid_in(path: Path) -> int:
    """The pid a rank left in `path` (`_launched`, written whole by a rename), or 0 when it cannot be read."""
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        return 0


def _wait_group_gone(pgid: int, deadline: float):
    """Wait until no process of group `pgid` is left, until `deadline` (time.time) at most."""
    while True:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return
        if time.time() >= deadline:
            raise subprocess.TimeoutExpired("process group", 0)
        time.sleep(0.05)


def _die_with_parent():
    """In the launcher, before exec: SIGKILL when the parent dies (Linux prctl PR_SET_PDEATHSIG) — at
    once, so it writes no more logs into the scratch folder the ranks then remove."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)      # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass                                                                     # not Linux: watch_parent remains


def watch_parent(poll: float = 1.0):
    """In a rank: a daemon thread that ends this process (and removes the scratch folder) as soon as
    the `ppddpm --nproc` parent is gone, however it went."""
    parent, scratch = os.environ.get(PARENT_ENV), os.environ.get(OUTPUT_ENV)
    if not parent:
        return

    def watch():
        while _alive(int(parent)):
            time.sleep(poll)
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
        os._exit(1)

    threading.Thread(target=watch, name="ppddpm-parent-watch", daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def parent_gone() -> bool:
    parent = os.environ.get(PARENT_ENV)
    return bool(parent) and not _alive(int(parent))


def check_nproc(nproc: int, oversubscribe: bool = False):
    """--nproc at most the cores (or GPUs) here: more only slows every rank and multiplies memory."""
    try:
        import paddle

        gpus = paddle.device.cuda.device_count() if paddle.is_compiled_with_cuda() else 0
    except Exception:       # noqa: BLE001  (no paddle device query: count cores)
        gpus = 0
    limit, what = (gpus, "GPUs") if gpus else (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                               else os.cpu_count() or 1, "CPU cores")
    if nproc > limit and not oversubscribe:
        raise BadValue(f"--nproc {nproc} is more than the {limit} {what} here; use at most {limit}, or pass "
                       f"--oversubscribe to start {nproc} ranks anyway")


class RankOutput:
    """Inside a launched rank: stdout/stderr to the scratch folder, and the exit status after."""

    def __init__(self):
        folder = os.environ.get(OUTPUT_ENV)
        self.folder = Path(folder) if folder else None
        self.rank = ranks.rank()

    def start(self) -> "RankOutput":
        if self.folder is not None:
            watch_parent()
            self.saved = sys.stdout, sys.stderr
            sys.stdout = open(self.folder / f"rank{self.rank}.out", "w", buffering=1)
            sys.stderr = open(self.folder / f"rank{self.rank}.err", "w", buffering=1)
        return self

    def finish(self, status: int) -> int:
        if self.folder is not None:
            for stream in (sys.stdout, sys.stderr):
                stream.flush()
                stream.close()
            sys.stdout, sys.stderr = self.saved
            if parent_gone():                    # nobody will read it: the scratch folder goes
                shutil.rmtree(self.folder, ignore_errors=True)
            else:
                (self.folder / f"rank{self.rank}.rc").write_text(str(status))
        return status


# 0.3 names that live elsewhere now (ppddpm/_moved.py): answered with a DeprecationWarning
__getattr__ = moved_names(__name__)
