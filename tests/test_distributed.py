"""Many-seed work over paddle.distributed (issue 14): two gloo ranks on this CPU give the
one-process results bit for bit, and a failing rank fails the run with its own error.

Each test starts real `paddle.distributed.launch` jobs (~5 s of start-up each), on the tiny
8x8 pipeline and few steps; `timeout` bounds every run, so a hang fails the test instead of CI.
"""
import json
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import ppddpm

LAUNCH_TIMEOUT = 300
# launches one at a time (`make test` runs the suite on two pytest-xdist workers): each launch takes
# two ranks' worth of cores, and two at once could draw the same free port for their master
pytestmark = pytest.mark.xdist_group("paddle-launch")


def cli(*args):
    return subprocess.run([sys.executable, "-m", "ppddpm", *map(str, args)], capture_output=True, text=True,
                          timeout=LAUNCH_TIMEOUT)


def test_ab_over_two_ranks_equals_one_process_bitwise(tmp_path, saved_pipe_dir):
    common = ("ab", "--model", saved_pipe_dir, "--seed", "0-4", "--steps", 12, "--seed-batch", 2,
              "--variants", "posterior,direct", "--mode", "free", "--quiet")
    one = cli(*common, "--out", tmp_path / "one")
    two = cli(*common, "--out", tmp_path / "two", "--nproc", 2)
    assert one.returncode == 0, one.stderr
    assert two.returncode == 0, two.stderr
    assert two.stdout.replace("/two/", "/one/") == one.stdout       # rank 0's table, as one process prints it
    a, b = (json.loads((tmp_path / d / "ab.json").read_text()) for d in ("one", "two"))
    assert a == b and a["seeds"] == [0, 1, 2, 3, 4] and a["meta"]["seed_batch"] == 2


def test_eval_and_many_seed_sample_over_two_ranks_equal_one_process(tmp_path, saved_pipe_dir):
    for out, extra in (("one", ()), ("two", ("--nproc", 2))):
        res = cli("eval", "--model", saved_pipe_dir, "--n", 70, "--steps", 4, "--out", tmp_path / out / "eval", *extra)
        assert res.returncode == 0, res.stderr
        res = cli("sample", "--model", saved_pipe_dir, "--seed", "3-5", "--steps", 8, "--every", 2,
                  "--out", tmp_path / out / "sample", "--quiet", *extra)
        assert res.returncode == 0, res.stderr
        listed = set(re.findall(r"\S+\.(?:npz|png)", res.stdout))        # every rank's files, in the output one reads
        assert listed == {str(p) for p in (tmp_path / out / "sample").iterdir() if p.suffix in (".npz", ".png")}
    # eval draws n = 70 in batches of 64 (seeds 0 and 64): one batch a rank; sample splits its seeds 2 + 1
    one, two = (np.load(tmp_path / d / "eval" / "samples.npz") for d in ("one", "two"))
    assert np.array_equal(one["samples"], two["samples"])
    for seed in (3, 4, 5):
        a, b = (ppddpm.Trajectory.load(tmp_path / d / "sample" / f"trajectory_seed{seed}.npz") for d in ("one", "two"))
        assert np.array_equal(a.prev_sample, b.prev_sample) and np.array_equal(a.timesteps, b.timesteps)
    assert (tmp_path / "two" / "sample" / "sheet_seeds3-5.png").exists()


SHARDED = """
import os, sys, time
import numpy as np
from ppddpm.core.distributed import sharded, world
from ppddpm.errors import BadValue

LATE = 33                  # s: past gloo's own timeout for a collective (30 s, which paddle keeps for gloo)
mode = sys.argv[1]
rank, ranks = world()

def work(group):
    if mode == "bad-input" and rank == 1:
        raise BadValue("seed 5 is not welcome here")
    if mode == "bug" and rank == 1:
        return 1 / 0
    if mode == "dies" and rank == 1:
        os._exit(7)
    if mode == "late" and rank == 1:
        time.sleep(LATE)
    return [s * s for s in group]

try:
    print("gathered", sharded([[0, 1], [2, 3], [4, 5]], work))
except Exception as exc:
    print(f"rank {rank} raised {type(exc).__name__}: {str(exc).splitlines()[0]}")
    sys.exit(3)
"""


def launch(tmp_path, mode):
    script = tmp_path / "sharded.py"
    script.write_text(textwrap.dedent(SHARDED))
    from ppddpm.cli.launch import backend_env

    return subprocess.run([sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2",
                           "--max_restart", "0", "--log_dir", str(tmp_path / "log"), str(script), mode],
                          env=backend_env(), capture_output=True, text=True, timeout=LAUNCH_TIMEOUT)


def rank_log(tmp_path, rank):
    return (tmp_path / "log" / f"workerlog.{rank}").read_text()


def test_a_rank_whose_share_ends_past_gloos_timeout_still_gathers(tmp_path):
    """Rank 1's share takes longer than gloo's own timeout for a collective: rank 0 waits for it
    before the gather (`all_arrived`) instead of failing in it ("TIMEOUT … unbound_buffer.cc")."""
    res = launch(tmp_path, "late")
    assert res.returncode == 0, res.stdout[-2000:]
    for rank in (0, 1):
        assert "gathered [[0, 1], [4, 9], [16, 25]]" in rank_log(tmp_path, rank)


def test_groups_go_round_robin_and_come_back_in_order(tmp_path):
    res = launch(tmp_path, "ok")
    assert res.returncode == 0, res.stdout[-2000:]
    for rank in (0, 1):              # groups 0 and 2 ran on rank 0, group 1 on rank 1; both ranks get all three
        assert "gathered [[0, 1], [4, 9], [16, 25]]" in rank_log(tmp_path, rank)


@pytest.mark.parametrize("mode, error", [
    ("bad-input", "BadValue: seed 5 is not welcome here"),
    ("bug", "RankFailed: rank 1 failed in work: ZeroDivisionError: division by zero"),
])
def test_a_failing_rank_fails_every_rank_with_its_error(tmp_path, mode, error):
    res = launch(tmp_path, mode)
    assert res.returncode != 0
    for rank in (0, 1):
        assert f"rank {rank} raised {error}" in rank_log(tmp_path, rank)


def test_a_rank_that_dies_ends_the_run_instead_of_hanging(tmp_path):
    res = launch(tmp_path, "dies")                # bounded by LAUNCH_TIMEOUT; gloo resets the peer's gather
    assert res.returncode != 0
    assert "gathered" not in rank_log(tmp_path, 0)


def test_the_cli_relays_a_ranks_bad_input_as_one_line_and_exit_2(tmp_path, saved_pipe_dir):
    res = cli("ab", "--model", saved_pipe_dir, "--seed", "0-3", "--steps", 2000, "--nproc", 2, "--out", tmp_path)
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().splitlines() == [
        "ppddpm ab: error: --steps must be at most 1000 (the model's num_train_timesteps), got 2000"]


ABORT = """
import os
# rank 0 dies with SIGABRT before it joins the others, in the first launch only (or in every launch):
# what paddle's gloo set-up occasionally does to a rank (ppddpm.cli.launch.run)
if os.environ.get("PADDLE_TRAINER_ID") == "0" and os.environ.get("PPDDPM_RANK_OUTPUT"):
    flag = os.path.join(os.path.dirname(__file__), "aborted")
    if EVERY_LAUNCH or not os.path.exists(flag):
        open(flag, "a").write("x")
        os.abort()
"""
RETRY_NOTE = r"ppddpm: the launch of 2 ranks failed \(exit \d+\) before its ranks had all joined, so before any " \
             r"work; starting it once more"
RETRY_AFTER_JOINING = r"ppddpm: the launch of 2 ranks failed \(exit \d+\) after its ranks had joined: rank (0|0, 1) " \
                      r"died without a status \(a signal\) before any result was written; starting it once more"


def sample_with_an_aborting_rank(tmp_path, saved_pipe_dir, every_launch: bool):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(f"EVERY_LAUNCH = {every_launch}\n" + ABORT)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])))
    res = subprocess.run([sys.executable, "-m", "ppddpm", "sample", "--model", str(saved_pipe_dir), "--seed", "3-4",
                          "--steps", "3", "--out", str(tmp_path / "out"), "--quiet", "--nproc", "2"],
                         env=env, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT)
    return res, (site / "aborted").read_text()


def test_a_launch_whose_rank_aborts_before_joining_is_started_once_more(tmp_path, saved_pipe_dir):
    """A real rank aborting in a real launch (a sitecustomize on the ranks' path): nothing had begun, so
    the launch runs again, says so in one line, and the command's result is whole."""
    res, aborts = sample_with_an_aborting_rank(tmp_path, saved_pipe_dir, every_launch=False)
    assert aborts == "x" and res.returncode == 0, res.stderr
    notes = [line for line in res.stderr.splitlines() if line.startswith("ppddpm: ")]
    assert len(notes) == 1 and re.fullmatch(RETRY_NOTE, notes[0]), res.stderr
    for seed in (3, 4):
        assert len(ppddpm.Trajectory.load(tmp_path / "out" / f"trajectory_seed{seed}.npz")) == 3


def test_a_launch_is_started_at_most_twice_and_then_says_what_each_rank_did(tmp_path, saved_pipe_dir):
    res, aborts = sample_with_an_aborting_rank(tmp_path, saved_pipe_dir, every_launch=True)
    assert aborts == "xx" and res.returncode != 0
    lines = res.stderr.splitlines()
    assert re.fullmatch(RETRY_NOTE, lines[0]), res.stderr
    assert "ppddpm: the launch of 2 ranks failed (exit" in res.stderr and "before every rank finished" in res.stderr
    assert "rank 0: never joined, no status (killed?)" in lines, res.stderr
    assert any(re.fullmatch(r"rank 1: never joined, (status \d+|no status \(killed\?\))", line) for line in lines)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


AUDITED = """
import os, sys
# rank 0 dies with SIGABRT in the first launch, at the audit event EVENT whose argument ARG ends with
# SUFFIX (sys.addaudithook: no ppddpm import here, so every process starts as fast as ever)
if os.environ.get("PADDLE_TRAINER_ID") == "0" and os.environ.get("PPDDPM_RANK_OUTPUT"):
    flag = os.path.join(os.path.dirname(__file__), "aborted")

    def hook(event, args):
        if event == EVENT and str(args[ARG]).endswith(SUFFIX) and not os.path.exists(flag):
            open(flag, "a").write("x")
            os.abort()
    sys.addaudithook(hook)
"""


def run_with_rank0_aborting_at(tmp_path, event, arg, suffix, *command):
    """`ppddpm COMMAND --nproc 2` whose rank 0 aborts at an audit event (AUDITED) of the first launch."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(f"EVENT, ARG, SUFFIX = {event!r}, {arg}, {suffix!r}\n" + AUDITED)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])))
    res = subprocess.run([sys.executable, "-m", "ppddpm", *map(str, command), "--quiet", "--nproc", "2"], env=env,
                         capture_output=True, text=True, timeout=LAUNCH_TIMEOUT)
    return res, (site / "aborted").read_text() if (site / "aborted").exists() else ""


def test_a_rank_dying_after_the_ranks_joined_before_any_result_is_started_once_more(tmp_path, saved_pipe_dir):
    """Rank 0 aborts as it marks itself joined (every rank is past the barrier; rank 1 goes on to its
    work): nothing is in --out yet, so the launch runs again, says so in one line, and ab.json is whole."""
    res, aborts = run_with_rank0_aborting_at(tmp_path, "open", 0, "rank0.joined", "ab", "--model", saved_pipe_dir,
                                             "--seed", "0-3", "--steps", 4, "--out", tmp_path / "out")
    assert aborts == "x" and res.returncode == 0, res.stderr
    notes = [line for line in res.stderr.splitlines() if line.startswith("ppddpm: ")]
    assert len(notes) == 1 and re.fullmatch(RETRY_AFTER_JOINING, notes[0]), res.stderr
    assert json.loads((tmp_path / "out" / "ab.json").read_text())["seeds"] == [0, 1, 2, 3]


def test_a_rank_dying_after_a_result_was_written_is_not_started_again(tmp_path, saved_pipe_dir):
    """Rank 0 aborts as its finished trajectory is renamed into --out, where its streamed steps already
    are: a second launch would find them, so the failure is reported, with what each rank did."""
    res, aborts = run_with_rank0_aborting_at(tmp_path, "os.rename", 1, "trajectory_seed3.npz", "sample", "--model",
                                             saved_pipe_dir, "--seed", "3-4", "--steps", 3, "--out", tmp_path / "out")
    assert aborts == "x" and res.returncode != 0
    assert "starting it once more" not in res.stderr and "rank 0: joined, no status (killed?)" in res.stderr, res.stderr
