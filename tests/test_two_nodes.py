"""Two nodes (issue 33): README's two-node example, run as printed on two "machines" — two Linux
network namespaces joined by a veth pair, 198.18.0.1 and 198.18.0.2 (198.18.0.0/15: the range kept
for network tests), sharing this file system as nodes on a shared file system do — gives the
one-process results bit for bit; a node lost mid-run or missing at the start ends the other with
one line, leaving no process behind.

The namespaces, the pair and the addresses exist only inside each test (unique names per run) and
are removed after it. Making them needs root and `ip netns` (iproute2): elsewhere those tests are
skipped, saying why. Each node's start costs ~8-10 s of imports, so the runs are tiny.
"""
import contextlib
import json
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from namespaces import A, B, NoNamespaces, two_nodes

import ppddpm

README = Path(__file__).resolve().parents[1] / "README.md"
RUN_TIMEOUT = 240                           # s: a hang fails the test instead of CI
LOST_WITHIN = 20                            # s: ppddpm.cli.nodes — LOST_AFTER 10 + 2 × GRACE_SECONDS 5
# ranks are launched: one test of this group at a time (tests/test_distributed.py)
pytestmark = pytest.mark.xdist_group("paddle-launch")


def cli(*args):
    return subprocess.run([sys.executable, "-m", "ppddpm", *map(str, args)], capture_output=True, text=True,
                          timeout=RUN_TIMEOUT)


@pytest.fixture
def nodes():
    """Two namespaces joined by a veth pair, made for the test and removed after it (skipped, saying why,
    where they cannot be made)."""
    try:
        with two_nodes() as made:
            yield made
    except NoNamespaces as exc:
        pytest.skip(str(exc))


def readme_two_node_command(**values):
    """README's two-node line (`… --ips 10.0.0.1,10.0.0.2 … # two nodes: run it on both`), its option
    values replaced by `values` (every one of which it must have)."""
    line = next(line for line in README.read_text().splitlines() if "--ips" in line and "run it on both" in line)
    words = shlex.split(line.split("#")[0])
    assert words[0] == "ppddpm", line
    for option, value in values.items():
        words[words.index(f"--{option}") + 1] = str(value)
    return words[1:]


def steps_on_disk(stream: Path) -> int:
    """The steps a streamed run has on disk so far (its meta.json, replaced atomically as it goes)."""
    with contextlib.suppress(OSError, ValueError):
        return int(json.loads((stream / "meta.json").read_text()).get("steps_on_disk") or 0)
    return 0


def finish(proc):
    out, err = proc.communicate(timeout=RUN_TIMEOUT)
    return proc.returncode, out, err


def test_readme_two_node_ab_equals_one_process_bitwise(nodes, tmp_path, saved_pipe_dir):
    """README's line on both nodes (one rank each, same --out on the shared file system): node A
    prints the one-process table and writes ab.json bitwise equal to one process's; node B writes nothing."""
    tiny = ("--model", saved_pipe_dir, "--steps", 6, "--seed-batch", 2, "--quiet")
    command = readme_two_node_command(seed="0-3", nproc=1, ips=f"{A},{B}", out=tmp_path / "two")
    assert command[0] == "ab"
    runs = [nodes.start(ns, *command, *tiny) for ns in (nodes.a, nodes.b)]
    one = cli("ab", "--seed", "0-3", "--out", tmp_path / "one", *tiny)
    (status_a, out_a, err_a), (status_b, out_b, err_b) = map(finish, runs)
    assert one.returncode == 0, one.stderr
    assert status_a == 0 and status_b == 0, err_a + err_b
    assert out_a.replace(str(tmp_path / "two"), str(tmp_path / "one")) == one.stdout
    assert (tmp_path / "two" / "ab.json").read_bytes() == (tmp_path / "one" / "ab.json").read_bytes()
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["ab.json"]           # no lock, nothing else
    assert out_b == f"ppddpm ab: ranks 1-1 of 2 ran on this node ({B}); rank 0's node, {A}, printed and wrote the " \
                    f"results\n" and err_b == ""


def test_sample_over_two_nodes_without_a_shared_file_system_lands_every_file_on_the_first(nodes, tmp_path,
                                                                                          saved_pipe_dir):
    """Node B sees --out as an empty file system of its own: the files of its seeds (4 and 6) reach
    node A's --out through the gather, bitwise those one process writes, and B leaves nothing in its own."""
    common = ("sample", "--model", saved_pipe_dir, "--seed", "3-6", "--steps", 8, "--every", 2, "--quiet")
    two = tmp_path / "two"
    two.mkdir()
    runs = [nodes.start(ns, *common, "--ips", f"{A},{B}", "--out", two, private=two if ns == nodes.b else None)
            for ns in (nodes.a, nodes.b)]
    one = cli(*common, "--out", tmp_path / "one")
    (status_a, out_a, err_a), (status_b, _, err_b) = map(finish, runs)
    assert one.returncode == 0 and status_a == 0 and status_b == 0, one.stderr + err_a + err_b
    assert err_b.splitlines() == [f"left in {two}: "], err_b
    assert out_a.replace(str(tmp_path / "two"), str(tmp_path / "one")) == one.stdout
    files = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == files and len(files) == 4 * 2 + 1
    for name in files:
        if name.endswith(".png"):
            assert (tmp_path / "two" / name).read_bytes() == (tmp_path / "one" / name).read_bytes(), name
    for seed in (3, 4, 5, 6):
        a, b = (ppddpm.Trajectory.load(tmp_path / d / f"trajectory_seed{seed}.npz") for d in ("one", "two"))
        assert np.array_equal(a.prev_sample, b.prev_sample) and np.array_equal(a.timesteps, b.timesteps)
        assert np.array_equal(a.pred_original_sample, b.pred_original_sample)


def test_a_node_lost_mid_run_ends_the_other_with_one_line_and_no_process_left(nodes, tmp_path, saved_pipe_dir):
    """Node B dies (every process in it SIGKILLed) while both sample: node A stops its rank within
    LOST_WITHIN s, says so in one line, leaves no process, and its run in progress stays loadable."""
    common = ("sample", "--model", saved_pipe_dir, "--seed", "0-3", "--steps", 1000, "--every", 10, "--quiet",
              "--nproc", 1, "--ips", f"{A},{B}", "--out", tmp_path / "two")
    runs = [nodes.start(ns, *common) for ns in (nodes.a, nodes.b)]
    stream = tmp_path / "two" / "trajectory_seed0"             # node A's first run, streamed while it samples
    deadline = time.monotonic() + RUN_TIMEOUT
    while steps_on_disk(stream) < 1 and time.monotonic() < deadline and runs[0].poll() is None:
        time.sleep(0.2)
    assert runs[0].poll() is None, runs[0].communicate()
    nodes.kill(nodes.b)
    killed = time.monotonic()
    status, out, err = finish(runs[0])
    assert time.monotonic() - killed < LOST_WITHIN
    assert status == 1 and err.splitlines() == [
        f"ppddpm sample: error: node {B} was lost mid-run (its connection closed); the ranks here were stopped and "
        f"what they wrote is kept, as after Ctrl-C"], err
    assert nodes.pids(nodes.a) == [] and nodes.pids(nodes.b) == []
    kept = ppddpm.Trajectory.load(stream)
    assert 1 <= len(kept) < 100 and not (tmp_path / "two" / "trajectory_seed0.npz").exists()
    finish(runs[1])


def test_a_node_missing_ends_the_other_with_one_line_naming_it(nodes):
    """Each node alone, its peer never there: the first node names the missing one, the other the
    first node, within --join-timeout (plus the start-up before the wait)."""
    alone = {nodes.a: f"{A},198.18.0.3", nodes.b: f"198.18.0.4,{B}"}
    started = time.monotonic()
    runs = {ns: nodes.start(ns, "ab", "--seed", "0-1", "--steps", 2, "--join-timeout", 4, "--ips", ips, "--out",
                            "/nonexistent") for ns, ips in alone.items()}
    (status_a, out_a, err_a), (status_b, out_b, err_b) = (finish(runs[ns]) for ns in alone)
    assert time.monotonic() - started < 4 + 60
    assert status_a == 1 and out_a == "" and err_a.splitlines() == [
        "ppddpm ab: error: node 198.18.0.3 did not join within 4 s (--join-timeout); start the same command there"]
    assert status_b == 1 and out_b == "" and err_b.splitlines() == [
        "ppddpm ab: error: node 198.18.0.4 (the first of --ips) did not answer on --port 6070 within 4 s "
        "(--join-timeout); start the same command there"]
    assert nodes.pids(nodes.a) == [] and nodes.pids(nodes.b) == []


BAD_IPS = ("ppddpm ab: error: argument --ips: --ips takes the nodes' IPv4 addresses, comma-separated, each once "
           "and at most 256 (e.g. 10.0.0.1,10.0.0.2), got 'not an ip' (see ppddpm ab --help)")


@pytest.mark.parametrize("args, line", [
    (("--ips", "not an ip"), BAD_IPS),
    (("--ips", "10.0.0.1,10.0.0.1"), None),
    (("--ips", "10.0.0.1,::1"), None),
    (("--host", "10.0.0.1"), "ppddpm ab: error: --host goes only with --ips (the nodes of a multi-node run)"),
    (("--ips", "198.18.0.3,198.18.0.4"), "ppddpm ab: error: none of --ips 198.18.0.3,198.18.0.4 is an address of "
                                         "this machine; run the command on the nodes listed, or name this node's "
                                         "address with --host"),
    (("--ips", "127.0.0.1,198.18.0.4", "--host", "198.18.0.4"),
     "ppddpm ab: error: --host 198.18.0.4 is not an address of this machine; give this node's own address"),
])
def test_a_bad_node_option_is_one_line_and_exit_2(tmp_path, args, line):
    res = cli("ab", "--seed", "0-1", "--out", tmp_path, *args)
    assert res.returncode == 2 and len(res.stderr.splitlines()) == 1, res.stderr
    assert res.stderr.strip() == (line or re.sub(r"got '.*'", f"got {args[1]!r}", BAD_IPS)), res.stderr
    assert list(tmp_path.iterdir()) == []
