"""ppddpm benchmarks: recording overhead, A/B cost, recording memory.

    python benchmarks/run_all.py            # full: 1000-step runs on the bundled model
    python benchmarks/run_all.py --quick    # 200-step runs, fewer repeats (a smoke run)

Prints a table and writes benchmarks/results.json. Times are medians of interleaved runs
(plain, recorded, plain, recorded, ...), so a machine that slows down mid-run slows both;
the spread is the min–max of the per-round ratios.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def _timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _ratio_stats(base, other):
    r = np.array(other) / np.array(base)
    return {"median": float(np.median(r)), "min": float(r.min()), "max": float(r.max()),
            "base_s": float(np.median(base)), "other_s": float(np.median(other))}


def bench_recording(pipe, steps, repeats):
    import ppddpm
    from ppddpm import _rng

    def plain():
        g = _rng.make_generator(777)
        pipe(generator=g, num_inference_steps=steps)
        _rng.release_generator(g)

    runs = {"plain": plain,
            "every=1": lambda: ppddpm.sample_trajectory(pipe, seed=777, num_inference_steps=steps, every=1),
            "every=50": lambda: ppddpm.sample_trajectory(pipe, seed=777, num_inference_steps=steps, every=50),
            "every=1, all fields": lambda: ppddpm.sample_trajectory(pipe, seed=777, num_inference_steps=steps,
                                                                     every=1, fields="all")}
    times = {k: [] for k in runs}
    plain()                                               # warm-up
    for _ in range(repeats):
        for name, fn in runs.items():
            times[name].append(_timed(fn))
    return {k: _ratio_stats(times["plain"], v) for k, v in times.items() if k != "plain"}


def bench_ab(pipe, steps, repeats):
    import ppddpm
    from ppddpm import _rng

    def plain():
        g = _rng.make_generator(777)
        pipe(generator=g, num_inference_steps=steps)
        _rng.release_generator(g)

    two, four = ["posterior", "direct"], ["ppdiffusers", "posterior", "direct", "direct-clip-consistent"]

    def sequential(variants):
        for v in variants:
            with ppddpm.patch_step(pipe.scheduler, v):
                plain()

    runs = {"plain": plain,
            "shadow, 2 variants": lambda: ppddpm.compare(pipe, two, seed=777, num_inference_steps=steps),
            "shadow, 4 variants": lambda: ppddpm.compare(pipe, four, seed=777, num_inference_steps=steps),
            "free, 2 variants (batched)": lambda: ppddpm.compare(pipe, two, seed=777, num_inference_steps=steps,
                                                                 mode="free"),
            "2 variants one after another": lambda: sequential(two)}
    times = {k: [] for k in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            times[name].append(_timed(fn))
    out = {k: _ratio_stats(times["plain"], v) for k, v in times.items() if k != "plain"}
    out["free batched vs one after another"] = _ratio_stats(times["2 variants one after another"],
                                                            times["free, 2 variants (batched)"])
    return out


MEMORY_CHILD = r"""
import json, resource, sys, tempfile
import numpy as np, paddle
import ppddpm
from ppddpm.models import ddpm_scheduler
mode, steps, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
sched = ddpm_scheduler()
gen = paddle.Generator().manual_seed(0, generator_name="mem")
x = paddle.randn([1, 3, size, size])
def run():
    global x
    sched.set_timesteps(steps)
    for t in sched.timesteps:
        eps = 0.1 * x            # a cheap stand-in for the UNet: the recorder's cost does not depend on the model
        x = sched.step(eps, t, x, generator=gen).prev_sample
run()  # warm-up: allocator and paddle kernels, before the baseline is read
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if mode == "none":
    run()
else:
    kw = {"memory-float32": {}, "memory-float16": {"dtype": "float16"},
          "disk": {"store": "disk", "path": tempfile.mkdtemp() + "/run"}}[mode]
    with ppddpm.record(sched, **kw) as traj:
        run()
    assert len(traj) == steps
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"baseline_mb": base / 1024, "peak_mb": peak / 1024}))
"""


def bench_memory(steps, size):
    out = {}
    for mode in ("none", "memory-float32", "memory-float16", "disk"):
        res = subprocess.run([sys.executable, "-c", MEMORY_CHILD, mode, str(steps), str(size)],
                             capture_output=True, text=True, check=True)
        data = json.loads(res.stdout.strip().splitlines()[-1])
        data["growth_mb"] = data["peak_mb"] - data["baseline_mb"]
        out[mode] = data
    frame_mb = 3 * size * size * 4 / 2 ** 20
    out["expected_float32_mb"] = 2 * steps * frame_mb
    return out


def machine():
    import paddle
    import ppdiffusers

    import ppddpm

    return {"cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(), "paddle": paddle.__version__, "ppdiffusers": ppdiffusers.__version__,
            "device": paddle.device.get_device(), "ppddpm": ppddpm.__version__}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--model", default=None)
    p.add_argument("--out", default=str(HERE / "results.json"))
    p.add_argument("--repeats", type=int, default=None, help="interleaved rounds (default 5; 3 with --quick)")
    args = p.parse_args(argv)
    steps, repeats = (200, 3) if args.quick else (1000, 5)
    repeats = args.repeats or repeats
    import warnings

    warnings.filterwarnings("ignore")
    import ppddpm

    pipe = ppddpm.load_pipeline(args.model)
    pipe.set_progress_bar_config(disable=True)
    results = {"machine": machine(), "steps": steps, "repeats": repeats,
               "model": args.model or "bundled ddpm-digits-16"}
    print(f"machine: {results['machine']}")
    print(f"\n1. recording overhead ({steps} steps, batch 1, {repeats} interleaved rounds) — target every=50 ≤ 1.02x, every=1 ≤ 1.05x")
    results["recording"] = bench_recording(pipe, steps, repeats)
    for k, v in results["recording"].items():
        print(f"   {k:28s} {v['median']:.3f}x  (spread {v['min']:.3f}–{v['max']:.3f}; plain {v['base_s']:.2f} s)")
    print(f"\n2. A/B cost ({steps} steps) — target shadow with 2 variants ≤ 1.05x a plain run")
    results["ab"] = bench_ab(pipe, steps, max(2, repeats - 2))
    for k, v in results["ab"].items():
        print(f"   {k:34s} {v['median']:.3f}x  (spread {v['min']:.3f}–{v['max']:.3f})")
    size = 256
    mem_steps = 200 if args.quick else 1000
    print(f"\n3. peak RSS growth recording {mem_steps} steps of 3x{size}x{size}, x_t and x̂_0 "
          f"(a cheap stand-in denoiser: the recorder's cost does not depend on the model) — target streamed ≤ 150 MB")
    results["memory"] = bench_memory(mem_steps, size)
    for k, v in results["memory"].items():
        if isinstance(v, dict):
            print(f"   {k:16s} +{v['growth_mb']:8.1f} MB  (peak {v['peak_mb']:.0f} MB)")
    print(f"   (two float32 fields of that size hold {results['memory']['expected_float32_mb']:.0f} MB)")
    Path(args.out).write_text(json.dumps(results, indent=1))
    print(f"\nwrote {args.out}")
    if Path(args.out).resolve() == (HERE / "results.json").resolve():
        sys.path.insert(0, str(HERE.parent / "docs"))
        from readme_blocks import BLOCKS, fill

        fill("benchmarks-table", BLOCKS["benchmarks-table"][1](results), "benchmarks/run_all.py from "
             "benchmarks/results.json")
    return results


if __name__ == "__main__":
    main()
