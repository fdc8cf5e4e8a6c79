"""The CLI's `--nproc N`: run the same command as N ranks under paddle.distributed.launch.

    ppddpm ab --seed 0-15 --nproc 2      # = python -m paddle.distributed.launch --nproc_per_node 2 \\
                                         #       …/ppddpm/_launched.py   (argv: ab --seed 0-15)

The parent starts the launch (NCCL on GPUs; gloo on CPU, `PADDLE_DISTRI_BACKEND=gloo`) with
`--max_restart 0`, so a failing rank ends the job. Each rank runs the command (`ppddpm.distributed`
splits the work) with its stdout and stderr in files of a scratch folder, and its exit status
next to them. The parent then prints rank 0's output as its own and, if a rank failed, the
lowest failing rank's error, exiting with that rank's status (2 for bad input, as ever). Without
`--nproc`, nothing here runs.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

OUTPUT_ENV = "PPDDPM_RANK_OUTPUT"       # a rank's scratch folder for its output and status
ARGV_ENV = "PPDDPM_RANK_ARGV"           # the ranks' command line, as JSON: launch's own parser would
                                        # take `--n` for its `--nnodes` if it came as arguments


def backend_env() -> dict:
    """gloo where there is no GPU: paddle's default, NCCL, needs one."""
    import paddle

    env = dict(os.environ)
    if not (paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0):
        env.setdefault("PADDLE_DISTRI_BACKEND", "gloo")
    return env


def inside_launch() -> bool:
    """Whether this process is a rank of a paddle.distributed launch (then --nproc starts nothing)."""
    return "PADDLE_TRAINER_ID" in os.environ


def run(nproc: int, argv: list, ips: str = None) -> int:
    """Run `ppddpm <argv>` as `nproc` ranks per node; relay rank 0's output; return the exit status."""
    scratch = Path(tempfile.mkdtemp(prefix="ppddpm-launch-"))
    env = backend_env()
    env[OUTPUT_ENV] = str(scratch)
    env[ARGV_ENV] = json.dumps(argv)       # --nproc included: a rank knows it is one (inside_launch)
    cmd = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", str(nproc), "--max_restart", "0",
           "--log_dir", str(scratch / "log")]
    if ips:
        cmd += ["--ips", ips]
    cmd += [str(Path(__file__).with_name("_launched.py"))]
    try:
        launched = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        status = {int(p.stem.split("rank")[1]): int(p.read_text() or 1) for p in scratch.glob("rank*.rc")}
        rank0 = scratch / "rank0.out"
        if rank0.exists():
            sys.stdout.write(rank0.read_text())
        failed = sorted(r for r, rc in status.items() if rc != 0)
        if failed:
            sys.stderr.write((scratch / f"rank{failed[0]}.err").read_text())
            return status[failed[0]]
        if launched.returncode != 0 or len(status) < nproc:
            tail = "\n".join(launched.stdout.splitlines()[-20:])
            sys.stderr.write(f"ppddpm: the launch of {nproc} ranks failed (exit {launched.returncode}) before every "
                             f"rank finished; its last lines:\n{tail}\n")
            return launched.returncode or 1
        return 0
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


class RankOutput:
    """Inside a launched rank: stdout/stderr to the scratch folder, and the exit status after."""

    def __init__(self):
        folder = os.environ.get(OUTPUT_ENV)
        self.folder = Path(folder) if folder else None
        self.rank = int(os.environ.get("PADDLE_TRAINER_ID", "0"))

    def start(self) -> "RankOutput":
        if self.folder is not None:
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
            (self.folder / f"rank{self.rank}.rc").write_text(str(status))
        return status
