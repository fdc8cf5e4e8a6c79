"""The CLI's `--nproc N`: run the same command as N ranks under paddle.distributed.launch.

    ppddpm ab --seed 0-15 --nproc 2      # = python -m paddle.distributed.launch --nproc_per_node 2 \\
                                         #       …/ppddpm/cli/_launched.py   (argv: ab --seed 0-15)

The parent starts the launch (NCCL on GPUs; gloo on CPU, `PADDLE_DISTRI_BACKEND=gloo`) with
`--max_restart 0`, so a failing rank ends the job. Each rank runs the command (`ppddpm.core.distributed`
splits the work) with its stdout and stderr in files of a scratch folder, and its exit status
next to them. The parent then prints rank 0's output as its own and, if a rank failed, the
lowest failing rank's error, exiting with that rank's status (2 for bad input, as ever). Without
`--nproc`, nothing here runs.

The job ends as one. The launch runs in its own process group (session): on Ctrl-C or SIGTERM
the parent stops the whole group (SIGTERM, then SIGKILL after a grace period) and waits for it
before it reports, so no rank writes after the command has said it failed. If the parent itself
dies (SIGKILL, a crashed shell), the kernel kills the launcher (PR_SET_PDEATHSIG) and every
rank notices within a second (`watch_parent`: a thread polling the parent's pid),
removes the scratch folder and exits. `--nproc` is bounded by the CPU cores (GPUs where there
are any) unless `--oversubscribe`.
"""
from __future__ import annotations

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
from pathlib import Path

from ppddpm._moved import moved_names
from ppddpm.core import ranks
from ppddpm.errors import BadValue

OUTPUT_ENV = ranks.OUTPUT_VARIABLE      # a rank's scratch folder for its output and status
PARENT_ENV = "PPDDPM_PARENT_PID"        # the `ppddpm --nproc` process the ranks outlive by at most a second
GRACE_SECONDS = 5                       # between SIGTERM and SIGKILL when the job is stopped
KEEP_ENV = "PPDDPM_KEEP_SCRATCH"        # debugging: where to copy each launch's scratch folder
ARGV_ENV = "PPDDPM_RANK_ARGV"           # the ranks' command line, as JSON: launch's own parser would
                                        # take `--n` for its `--nnodes` if it came as arguments


def backend_env() -> dict:
    """gloo where there is no GPU: paddle's default, NCCL, needs one."""
    import paddle

    env = dict(os.environ)
    if not (paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0):
        env.setdefault("PADDLE_DISTRI_BACKEND", "gloo")
    return env


def run(nproc: int, argv: list, ips: str = None) -> int:
    """Run `ppddpm <argv>` as `nproc` ranks per node; relay rank 0's output; return the exit status.

    On one node, a launch that fails before its ranks have all joined (`ranks.mark_joined`: none began
    the work) is started once more, with a note on stderr: paddle's
    gloo set-up occasionally aborts a rank there (SIGABRT), more often on a loaded machine. Across nodes
    (`ips`) each node would decide alone, so there it is reported as it is."""
    for attempt in (1, 2):
        scratch = Path(tempfile.mkdtemp(prefix="ppddpm-launch-"))
        try:
            returncode, output = _launch(nproc, argv, ips, scratch)
            if attempt == 1 and not ips and returncode != 0 and _never_joined(scratch):
                sys.stderr.write(f"ppddpm: the launch of {nproc} ranks failed (exit {returncode}) before its ranks "
                                 f"had all joined, so before any work; starting it once more\n")
                continue
            return _relay(scratch, nproc, returncode, output)
        finally:
            _keep_for_debugging(scratch)
            shutil.rmtree(scratch, ignore_errors=True)


def _launch(nproc: int, argv: list, ips: str, scratch: Path):
    """One paddle.distributed.launch of the ranks with `scratch` as their folder: (exit status, its output)."""
    env = backend_env()
    env[OUTPUT_ENV] = str(scratch)
    env[ARGV_ENV] = json.dumps(argv)       # --nproc included: a rank knows it is one (ranks.launched)
    cmd = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", str(nproc), "--max_restart", "0",
           "--log_dir", str(scratch / "log")]
    if ips:
        cmd += ["--ips", ips]
    cmd += [str(Path(__file__).with_name("_launched.py"))]
    env[PARENT_ENV] = str(os.getpid())
    launched = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True, preexec_fn=_die_with_parent)
    try:
        output, _ = launched.communicate()
    except BaseException:                    # Ctrl-C, SIGTERM (cli.Terminated): the job ends with us
        stop_group(launched)
        raise
    return launched.returncode, output


def _never_joined(scratch: Path) -> bool:
    """The ranks never all joined (no rank*.joined, `ranks.mark_joined`), so none began the work, and no
    rank ended with its own verdict: success (0) or bad input (2), which a second launch would only
    repeat. A rank that ended otherwise was stopped by the launcher when another died (143), or lost
    its peer while joining (1)."""
    return not any(scratch.glob("rank*.joined")) and not any(p.read_text().strip() in ("0", "2")
                                                             for p in scratch.glob("rank*.rc"))


def _keep_for_debugging(scratch: Path):
    """PPDDPM_KEEP_SCRATCH=<dir>: a copy of the launch's scratch folder (the ranks' output, paddle's
    workerlog.N) goes there before it is removed."""
    keep = os.environ.get(KEEP_ENV)
    if keep:
        try:
            shutil.copytree(scratch, Path(keep) / scratch.name, dirs_exist_ok=True)
        except OSError as exc:                 # a debugging aid: never in the way of the job's own outcome
            sys.stderr.write(f"ppddpm: could not keep the launch's folder in {keep}: {exc}\n")


def _relay(scratch: Path, nproc: int, returncode: int, output: str) -> int:
    """Rank 0's output as ours; the lowest failing rank's error and status when every rank reported one,
    else (a rank died without a word) the launch's own failure, with what each rank did."""
    status = {int(p.stem.split("rank")[1]): int(p.read_text() or 1) for p in scratch.glob("rank*.rc")}
    rank0 = scratch / "rank0.out"
    if rank0.exists():
        sys.stdout.write(rank0.read_text())
    failed = sorted(r for r, rc in status.items() if rc != 0)
    if failed and len(status) == nproc:        # every rank said how it ended: the lowest failure is the verdict
        sys.stderr.write((scratch / f"rank{failed[0]}.err").read_text())
        return status[failed[0]]
    if returncode != 0 or len(status) < nproc:  # a rank died unheard (the others were stopped, or lost it)
        tail = "\n".join(output.splitlines()[-20:])
        sys.stderr.write(f"ppddpm: the launch of {nproc} ranks failed (exit {returncode}) before every "
                         f"rank finished; its last lines:\n{tail}\n{_ranks_said(scratch, nproc, status)}")
        return returncode or 1
    return 0


def _ranks_said(scratch: Path, nproc: int, status: dict) -> str:
    """For a launch that failed: which ranks joined and ended (`status`: rank → its exit status, as
    `_relay` read them), and the last lines each wrote to stderr (paddle's own log of each,
    `workerlog.N`, is in the launch's lines above for the rank that failed)."""
    lines = []
    for r in range(nproc):
        err = scratch / f"rank{r}.err"
        said = err.read_text().strip().splitlines()[-5:] if err.exists() else []
        lines.append(f"rank {r}: {'joined' if (scratch / f'rank{r}.joined').exists() else 'never joined'}, "
                     f"{f'status {status[r]}' if r in status else 'no status (killed?)'}"
                     + "".join(f"\n  {line}" for line in said))
    return "\n".join(lines) + "\n"


def stop_group(proc, grace: float = GRACE_SECONDS):
    """End `proc`'s process group (the launcher and every rank): SIGTERM, then SIGKILL after `grace` s."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, grace)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
            _wait_group_gone(proc.pid, wait)
            break
        except subprocess.TimeoutExpired:
            continue


def _wait_group_gone(pgid: int, timeout: float):
    """Wait until no process of group `pgid` is left (the ranks may outlive the launcher briefly)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise subprocess.TimeoutExpired("process group", timeout)


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
