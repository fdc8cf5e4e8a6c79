"""This checkout against an earlier commit, side by side in one run: did anything slow down?

    python benchmarks/against.py REV [--steps 300] [--rounds 7]

Checks REV out into a temporary git worktree, imports both versions of ppddpm into one process
(each call runs with its own version's modules in `sys.modules`), and times, interleaved round by
round on the same pipeline: a plain `pipe()` run, `sample_trajectory(every=1)` and
`compare(["posterior", "direct"])` of each version. Prints each one's median ratio to the plain
run (min–max over rounds); a machine that slows down mid-run slows every column alike.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SKIP = ("__main__", "_launched")      # scripts, not modules


def _modules(root: Path) -> dict:
    """Import every module of the ppddpm under `root`; return them (and clear them from sys.modules)."""
    for name in [m for m in sys.modules if m == "ppddpm" or m.startswith("ppddpm.")]:
        del sys.modules[name]
    sys.path.insert(0, str(root))
    try:
        package = importlib.import_module("ppddpm")
        for info in pkgutil.iter_modules(package.__path__):
            if info.name not in SKIP:
                importlib.import_module("ppddpm." + info.name)
    finally:
        sys.path.pop(0)
    found = {k: v for k, v in sys.modules.items() if k == "ppddpm" or k.startswith("ppddpm.")}
    for name in found:
        del sys.modules[name]
    return found


def _using(modules: dict, fn):
    """fn, run with this version's modules in sys.modules (its lazy imports find its own code)."""
    def run():
        for name in [m for m in sys.modules if m == "ppddpm" or m.startswith("ppddpm.")]:
            del sys.modules[name]
        sys.modules.update(modules)
        return fn(modules)
    return run


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("rev", help="the earlier commit (e.g. a tag or hash)")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        old_root = Path(tmp) / "old"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(old_root), args.rev],
                       check=True, capture_output=True)
        try:
            versions = {args.rev: _modules(old_root), "this checkout": _modules(ROOT)}
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old_root)],
                           capture_output=True)
    new = versions["this checkout"]
    sys.modules.update(new)
    pipe = new["ppddpm.model.loading"].load_pipeline(None)
    pipe.set_progress_bar_config(disable=True)
    rng = new["ppddpm.core.rng"]
    steps = args.steps

    def plain():
        with rng.seeded(777) as g:
            pipe(generator=g, num_inference_steps=steps)

    runs = {"plain": plain}
    for label, modules in versions.items():
        runs[f"{label}: record every=1"] = _using(modules, lambda m: m["ppddpm"].sample_trajectory(
            pipe, seed=777, num_inference_steps=steps, every=1))
        runs[f"{label}: compare shadow, 2 variants"] = _using(modules, lambda m: m["ppddpm.analysis.ab"].compare(
            pipe, ["posterior", "direct"], seed=777, num_inference_steps=steps))
    times = {k: [] for k in runs}
    plain()                                            # warm-up
    for _ in range(args.rounds):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    base = np.array(times["plain"])
    print(f"{steps} steps, {args.rounds} interleaved rounds, plain run {np.median(base):.2f} s (median)")
    for name in list(runs)[1:]:
        r = np.array(times[name]) / base
        print(f"  {name:42s} {np.median(r):.3f}x  ({r.min():.3f}–{r.max():.3f})")


if __name__ == "__main__":
    main()
