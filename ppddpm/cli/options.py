"""The options several `ppddpm` commands share, each declared once, and the value parsers behind them.

A parser turns one word of the command line into a value or raises `argparse.ArgumentTypeError`
with one line saying what the option takes: argparse prints it as `ppddpm CMD: error: …`, exit 2.
"""
from __future__ import annotations

import argparse
import ipaddress

import numpy as np

MAX_SEED = 2 ** 32 - 1        # numpy's RandomState (training, metrics) takes no larger seed
MAX_SEEDS = 10_000           # seeds in one command: each is a run whose results are kept until the end
MAX_BATCH = 4096             # images in one UNet call
MAX_NPROC = 256              # ranks on one node, --oversubscribe or not: each is a process that imports paddle
                             # (~0.5 GB, seconds) and holds its own model; no node has that many GPUs
SHEET = 1024                 # samples a contact sheet (samples.png, sheet_seeds….png) shows at most: the first ones
MAX_NODES = 256              # addresses in --ips
PORT = 6070                  # --ips: the lead node's port for the nodes' meeting (paddle's store on the next one)
JOIN_TIMEOUT = 120           # --ips: seconds a node waits for the others to join
QUIET = "no progress bar (default: a bar only when stdout and stderr are a terminal; PPDDPM_PROGRESS=0 turns it off)"
FORCE = "overwrite the finished outputs of an earlier run in --out"


# --------------------------------------------------------------------------- value parsers

def int_at_least(low, name, high=None, why=""):
    """An integer ≥ `low` (and ≤ `high`, `why` saying why not more)."""
    kind = {1: "a positive integer", 0: "a non-negative integer"}.get(low, f"an integer ≥ {low}")

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be {kind}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{name} must be {kind}, got {value}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"{name} must be at most {high}{why}, got {value}")
        return value
    return parse


def positive(name):
    return int_at_least(1, name)


def nonneg(name):
    return int_at_least(0, name)


def positive_float(name, zero=False, what="", high=float("inf")):
    """A finite number > 0 (≥ 0 with `zero`) and ≤ `high`: inf and nan make NaN pictures or endless loops."""
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not (value >= 0 if zero else value > 0) or not np.isfinite(value) or value > high:
            upper = f" and ≤ {high:g}" if np.isfinite(high) else ", finite"
            raise argparse.ArgumentTypeError(f"{name} takes a number {'≥' if zero else '>'} 0{upper}{what}, "
                                             f"got {text!r}")
        return value
    return parse


def finite_float(name):
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not np.isfinite(value):
            raise argparse.ArgumentTypeError(f"{name} takes a finite number, got {text!r}")
        return value
    return parse


def seeds(text):
    """--seed: 7, 0,3,5 or 0-15 (inclusive), or a mix: 0-3,9."""
    found = []
    try:
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            first, dash, last = part.partition("-")
            span = range(int(first), int(last) + 1) if dash and first else [int(part)]
            if dash and first and not len(span):
                raise ValueError
            if len(found) + len(span) > MAX_SEEDS:
                raise argparse.ArgumentTypeError(f"--seed gives more than {MAX_SEEDS} seeds ({text!r}); run the "
                                                 f"range in parts of at most {MAX_SEEDS}")
            found.extend(span)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seed takes an integer, a comma-separated list or a range such as 0-15, "
                                         f"got {text!r}") from None
    if not found or min(found) < 0 or max(found) > MAX_SEED:
        raise argparse.ArgumentTypeError(f"--seed takes non-negative integers up to {MAX_SEED}, got {text!r}")
    return found[0] if len(found) == 1 else found


def address(text, name="--host"):
    """One IPv4 address of a node: not 0.0.0.0, a broadcast or multicast one (paddle's launcher
    writes endpoints as ADDRESS:PORT, so IPv6 is not taken)."""
    try:
        value = ipaddress.IPv4Address(text.strip())
    except ValueError:
        value = None
    if value is None or value.is_unspecified or value.is_multicast or value == ipaddress.IPv4Address(2 ** 32 - 1):
        raise argparse.ArgumentTypeError(f"{name} takes a node's IPv4 address (e.g. 10.0.0.1), got {text!r}")
    return str(value)


def addresses(text):
    """--ips: the nodes' IPv4 addresses, comma-separated, each once; the first is rank 0's node."""
    try:
        found = [address(part, "--ips") for part in text.split(",")]
    except argparse.ArgumentTypeError:
        found = []
    if not found or len(set(found)) < len(found) or len(found) > MAX_NODES:
        raise argparse.ArgumentTypeError(f"--ips takes the nodes' IPv4 addresses, comma-separated, each once and at "
                                         f"most {MAX_NODES} (e.g. 10.0.0.1,10.0.0.2), got {text!r}")
    return found


steps = positive("--steps")
batch_size = int_at_least(1, "--batch-size", MAX_BATCH, " (images in one UNet call)")


# --------------------------------------------------------------------------- option groups

def add_model(p):
    """--model and --trust-pickle: which pipeline to load."""
    p.add_argument("--model", default=None,
                   help="pipeline directory or hub id (default: the bundled offline model)")
    add_trust_pickle(p, "--model's weights even if pickled (model_state.pdparams)")


def add_trust_pickle(p, what):
    p.add_argument("--trust-pickle", action="store_true",
                   help=f"load {what}: unpickling runs any code in the file, use only for files you made (SECURITY.md)")


def add_seed_list(p, help):
    """--seed as one seed, a list or a range (one run per seed)."""
    p.add_argument("--seed", type=seeds, default=777, help=help)


def add_first_seed(p, help, default=0):
    """--seed as one integer numpy's RandomState takes."""
    p.add_argument("--seed", type=int_at_least(0, "--seed", MAX_SEED), default=default, help=help)


def add_steps(p, help="num_inference_steps (1 to the model's T)", default=1000):
    p.add_argument("--steps", type=steps, default=default, help=help)


def add_batch_size(p, help, default=1):
    p.add_argument("--batch-size", type=batch_size, default=default, help=help)


def add_out(p, default, help, force=True):
    """--out (a folder, or the page `view` writes) and, for commands whose outputs are finished
    results, --force to overwrite them."""
    p.add_argument("--out", default=default, help=help)
    if force:
        p.add_argument("--force", action="store_true", help=FORCE)


def add_quiet(p):
    p.add_argument("--quiet", action="store_true", help=QUIET)


def add_launch(p):
    """--nproc, --ips (--host, --port, --join-timeout), --oversubscribe: the same command as N ranks on
    this node (`ppddpm.cli.launch`) or on each node of --ips (`ppddpm.cli.nodes`)."""
    p.add_argument("--nproc", type=int_at_least(1, "--nproc", MAX_NPROC, " (processes on this node)"), default=1,
                   help="split the seeds over N processes, on each node with --ips (paddle.distributed.launch; gloo on "
                        "CPU, NCCL on GPUs); the results are bitwise those of one process")
    p.add_argument("--ips", type=addresses, default=None,
                   help="the nodes of a multi-node run, e.g. 10.0.0.1,10.0.0.2: run the same command on every node; "
                        "--nproc ranks each, rank 0 (which writes --out) on the first (default: this node only)")
    p.add_argument("--host", type=address, default=None,
                   help="with --ips: which of them this node is (default: the one that is an address of this machine)")
    p.add_argument("--port", type=int_at_least(1024, "--port", 65534), default=None,
                   help=f"with --ips: the first node's port where the nodes meet; paddle's store takes the next one "
                        f"(default: {PORT})")
    p.add_argument("--join-timeout", type=positive_float("--join-timeout", what=" seconds"), default=None,
                   help=f"with --ips: seconds a node waits for the others to start, and then for all ranks to join "
                        f"(default: {JOIN_TIMEOUT})")
    p.add_argument("--oversubscribe", action="store_true",
                   help="allow --nproc above the number of CPU cores (or GPUs) here")
