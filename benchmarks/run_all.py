"""ppddpm benchmarks: recording overhead and host reads, A/B cost, recording memory, 1 vs 2 processes,
how fast a mistake the arguments decide is answered, how soon `ppddpm view` of a 1000-step run is done,
the variational bound, and 2 nodes x 1 rank against 1 process (root: network namespaces).

    python benchmarks/run_all.py            # full: 1000-step runs on the bundled model
    python benchmarks/run_all.py --quick    # 200-step runs, fewer repeats (a smoke run)
    python benchmarks/run_all.py --only bpd # one section again (instant, view, bpd, nodes), the rest kept

Prints a table and writes benchmarks/results.json. Times are medians of interleaved runs
(plain, recorded, plain, recorded, ...), so a machine that slows down mid-run slows both;
the spread is the min–max of the per-round ratios.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
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


def _timed_cpu(fn):
    """(wall, process CPU) seconds: on a machine whose cores are shared, the CPU time of this process is
    the steadier measure of its own work."""
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def _ratio_stats(base, other, base_cpu=None, other_cpu=None):
    r = np.array(other) / np.array(base)
    out = {"median": float(np.median(r)), "min": float(r.min()), "max": float(r.max()),
           "base_s": float(np.median(base)), "other_s": float(np.median(other))}
    if base_cpu is not None:
        out["cpu_median"] = float(np.median(np.array(other_cpu) / np.array(base_cpu)))
    return out


def bench_recording(pipe, steps, repeats):
    import ppddpm
    from ppddpm.core import rng as _rng

    def plain():
        with _rng.seeded(777) as g:
            pipe(generator=g, num_inference_steps=steps)

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
    from ppddpm.core import rng as _rng

    def plain():
        with _rng.seeded(777) as g:
            pipe(generator=g, num_inference_steps=steps)

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
    unet = {1: _unet_call(pipe, 1, steps), 2: _unet_call(pipe, 2, steps)}
    runs.update({"UNet alone, batch 1": unet[1], "UNet alone, batch 2": unet[2]})
    times, cpu = {k: [] for k in runs}, {k: [] for k in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            wall, used = _timed_cpu(fn)
            times[name].append(wall)
            cpu[name].append(used)
    out = {k: _ratio_stats(times["plain"], v, cpu["plain"], cpu[k]) for k, v in times.items()
           if k != "plain" and not k.startswith("UNet")}
    apart, free = "2 variants one after another", "free, 2 variants (batched)"
    out["free batched vs one after another"] = _ratio_stats(times[apart], times[free], cpu[apart], cpu[free])
    one, two = "UNet alone, batch 1", "UNet alone, batch 2"
    out["UNet batch 2 vs batch 1"] = _ratio_stats(times[one], times[two], cpu[one], cpu[two])
    return out


def _unet_call(pipe, batch: int, calls: int):
    """`calls` UNet forwards at `batch` on one input, as a run makes them: what batching lanes can save is
    bounded by this (free A/B of 2 variants costs at least batch 2's time over two runs of batch 1's)."""
    import paddle

    x, t = paddle.randn([batch] + [pipe.unet.config.in_channels] + [pipe.unet.config.sample_size] * 2), 500

    def run():
        with paddle.no_grad():
            for _ in range(calls):
                pipe.unet(x, t)
    return run


def bench_host_reads(pipe, steps):
    """Host reads of paddle tensors (each a device synchronisation on a GPU) per step: a plain run,
    and the same run recorded every=1 on the default path (`ppddpm.core.transfer.host_reads`)."""
    import ppddpm
    from ppddpm.core import rng as _rng
    from ppddpm.core.transfer import host_reads

    with _rng.seeded(777) as g, host_reads() as plain:
        pipe(generator=g, num_inference_steps=steps)
    with host_reads() as recorded:
        traj = ppddpm.sample_trajectory(pipe, seed=777, num_inference_steps=steps, every=1)
    return {"steps": steps, "plain": sum(plain.values()), "recorded": sum(recorded.values()),
            "chunk": traj.meta["chunk"], "added_per_step": (sum(recorded.values()) - sum(plain.values())) / steps}


PROCESSES_CHILD = r"""
import hashlib, json, sys, time, warnings
warnings.filterwarnings("ignore")
import numpy as np
import ppddpm
from ppddpm.core.distributed import world
model, n_seeds, steps = (sys.argv[1] or None), int(sys.argv[2]), int(sys.argv[3])
rank, ranks = world()
pipe = ppddpm.load_pipeline(model)
ppddpm.compare(pipe, ["posterior", "direct"], seed=[0], num_inference_steps=3)     # warm-up (and the gather)
t0 = time.perf_counter()
report = ppddpm.compare(pipe, ["posterior", "direct"], seed=list(range(n_seeds)), num_inference_steps=steps)
seconds = time.perf_counter() - t0
digest = hashlib.sha256(b"".join(np.ascontiguousarray(a).tobytes() for d in (report.max_abs_prev, report.final)
                                 for a in d.values())).hexdigest()
if rank == 0:
    print("RESULT " + json.dumps({"seconds": seconds, "digest": digest}), flush=True)
"""


def bench_processes(model, seeds, steps, rounds):
    """`compare` over `seeds` seeds x `steps` steps (2 variants, shadow, seed_batch 4): one process
    against two ranks of paddle.distributed.launch (gloo), one thread each, interleaved rounds.
    "work": the compare call alone, timed on rank 0 (it ends with the gather); "wall": the whole
    command, start-up (the launcher, two interpreters importing paddle) included."""
    import tempfile

    from ppddpm.cli.launch import backend_env

    env = dict(backend_env(), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    work, wall, digests = {"1": [], "2": []}, {"1": [], "2": []}, set()
    with tempfile.TemporaryDirectory() as tmp:
        child = Path(tmp) / "child.py"
        child.write_text(PROCESSES_CHILD)
        args = [str(child), model or "", str(seeds), str(steps)]
        for r in range(rounds):
            for n in ("1", "2"):
                cmd = [sys.executable] + args if n == "1" else [
                    sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--max_restart", "0",
                    "--log_dir", str(Path(tmp) / f"log{r}")] + args
                t0 = time.perf_counter()
                res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
                wall[n].append(time.perf_counter() - t0)
                text = res.stdout if n == "1" else (Path(tmp) / f"log{r}" / "workerlog.0").read_text()
                result = json.loads(text.split("RESULT ")[-1].splitlines()[0])
                work[n].append(result["seconds"])
                digests.add(result["digest"])
    return {"seeds": seeds, "steps": steps, "rounds": rounds, "work": _ratio_stats(work["2"], work["1"]),
            "wall": _ratio_stats(wall["2"], wall["1"]), "reports_equal": len(digests) == 1}


def bench_nodes(model, seeds, steps, rounds):
    """`ppddpm ab` over `seeds` seeds x `steps` steps: 2 nodes x 1 rank (`--ips`, two network namespaces of
    this machine joined by a veth pair, tests/namespaces.py) against one process, the whole command's wall
    time, one thread each, interleaved rounds. On one machine the two nodes share its cores, so this
    measures what running across nodes costs (the nodes meeting, a launch on each, the gathers over TCP),
    not a speed-up. {"skipped": why} where namespaces cannot be made (not root, no `ip netns`)."""
    import tempfile

    sys.path.insert(0, str(HERE.parent / "tests"))
    from namespaces import A, B, NoNamespaces, two_nodes

    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    command = ["ab", "--seed", f"0-{seeds - 1}", "--steps", str(steps), "--quiet"]
    command += ["--model", model] if model else []
    wall, reports = {"1": [], "2": []}, set()
    try:
        with two_nodes() as nodes, tempfile.TemporaryDirectory() as tmp:
            for r in range(rounds):
                t0 = time.perf_counter()
                subprocess.run([sys.executable, "-m", "ppddpm", *command, "--out", f"{tmp}/one{r}"], env=env,
                               capture_output=True, check=True)
                wall["1"].append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                runs = [nodes.start(ns, *command, "--ips", f"{A},{B}", "--out", f"{tmp}/two{r}", env=env)
                        for ns in (nodes.a, nodes.b)]
                for run in runs:
                    _, err = run.communicate()
                    if run.returncode:
                        raise RuntimeError(f"2 nodes, round {r}: exit {run.returncode}: {err}")
                wall["2"].append(time.perf_counter() - t0)
                reports |= {Path(f"{tmp}/{d}{r}/ab.json").read_bytes() for d in ("one", "two")}
    except NoNamespaces as exc:
        return {"skipped": str(exc)}
    return {"seeds": seeds, "steps": steps, "rounds": rounds, "wall": _ratio_stats(wall["1"], wall["2"]),
            "reports_equal": len(reports) == 1}


def _print_nodes(n):
    if "skipped" in n:
        print(f"   skipped: {n['skipped']}")
        return
    w = n["wall"]
    print(f"   2 nodes x 1 rank: {w['median']:.2f}x the wall time of 1 process (spread {w['min']:.2f}–{w['max']:.2f}; "
          f"1 process {w['base_s']:.1f} s, 2 nodes {w['other_s']:.1f} s); on one machine the nodes share its cores: "
          f"this is the cost of the protocol, not a speed-up")
    print(f"   reports bitwise equal: {n['reports_equal']}")


MEMORY_CHILD = r"""
import json, resource, sys, tempfile
import numpy as np, paddle
import ppddpm
from ppddpm.model.builders import ddpm_scheduler
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


# mistakes the arguments (and the model's own JSON files) decide: answered before paddle loads
INSTANT_ERRORS = {
    "animate --field bogus": ["animate", "RUN", "--field", "bogus"],
    "sample --prompt on the bundled (pixel) model": ["sample", "--prompt", "cat"],
    "sample --decode vae on the bundled model": ["sample", "--decode", "vae"],
    "train --layers-per-block 3000": ["train", "--layers-per-block", "3000"],
}


def bench_instant_errors(rounds):
    """`python -m ppddpm …` to its one-line error (exit 2): median wall and CPU seconds of `rounds`
    runs each (the CPU time of the child is the steadier measure on shared cores)."""
    import resource
    import tempfile

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, argv in INSTANT_ERRORS.items():
            wall, cpu = [], []
            for _ in range(rounds):
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                t0 = time.perf_counter()
                res = subprocess.run([sys.executable, "-m", "ppddpm", *argv, "--out", str(Path(tmp) / "out")],
                                     capture_output=True, text=True, cwd=tmp)
                wall.append(time.perf_counter() - t0)
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
                assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
            out[name] = {"wall_s": float(np.median(wall)), "cpu_s": float(np.median(cpu))}
    return out


def report_instant_errors(results, rounds):
    print(f"\n5. mistakes answered at once (python -m ppddpm to its one-line error, median of {rounds}) — target ≤ 1 s")
    results["instant_errors"] = bench_instant_errors(rounds)
    for k, v in results["instant_errors"].items():
        print(f"   {k:46s} {v['wall_s']:.2f} s  (CPU {v['cpu_s']:.2f} s)")


def bench_view(model, repeats: int, steps: int = 1000) -> dict:
    """`ppddpm view` of a `steps`-step run of the bundled model (x_t and x̂_0 at every step), timed from the
    command line to the page written, beside `python -c "import ppddpm; import ppdiffusers"` alone: the
    price every picture paid while it rebuilt the scheduler, which it no longer imports. Interleaved rounds."""
    import tempfile

    import ppddpm

    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run.npz"
        pipe = ppddpm.load_pipeline(model)
        pipe.set_progress_bar_config(disable=True)
        ppddpm.sample_trajectory(pipe, seed=777, num_inference_steps=steps).save(run)
        commands = {"view": lambda k: [sys.executable, "-m", "ppddpm", "view", str(run), "--out",
                                       str(Path(tmp) / f"view{k}.html")],
                    "import ppddpm, ppdiffusers": lambda k: [sys.executable, "-c", "import ppddpm; import ppdiffusers"]}
        times = {name: [] for name in commands}
        for k in range(repeats):
            for name, command in commands.items():
                times[name].append(_timed(lambda: subprocess.run(command(k), check=True, capture_output=True)))
    return {"steps": steps, "repeats": repeats, **{name: {"median_s": float(np.median(t)), "min_s": float(min(t)),
                                                          "max_s": float(max(t))} for name, t in times.items()}}


def print_view(view: dict):
    print(f"\n6. ppddpm view of a {view['steps']}-step run (x_t and x̂_0), command to page — target ≤ 2 s")
    for name in ("view", "import ppddpm, ppdiffusers"):
        v = view[name]
        print(f"   {name:28s} {v['median_s']:.2f} s  (min–max {v['min_s']:.2f}–{v['max_s']:.2f})")


def bench_bpd(pipe, n: int = 256, timesteps: int = 50):
    """`ppddpm.likelihood.bpd` on n held-out digits: all T terms, and an estimate from `timesteps` of them (one
    UNet call per timestep for the whole batch). Wall and process CPU seconds, and the machine's load average
    (the cores are shared: a loaded machine slows the wall clock, not the CPU time)."""
    import ppddpm
    from ppddpm.model.data import load_digits

    images = load_digits("test", 8)[:n]
    out = {"n": n, "load_average_before": os.getloadavg()[0]}
    for label, k in (("all", None), ("sampled", timesteps)):
        reports = []
        wall, cpu = _timed_cpu(lambda: reports.append(ppddpm.likelihood.bpd(pipe, images, levels=17, timesteps=k,
                                                                           batch_size=n)))
        r = reports[0]
        out[label] = {"timesteps": len(r.timesteps), "seconds": wall, "cpu_seconds": cpu, "mean_bpd": r.mean,
                      "standard_error": r.standard_error}
    out["load_average_after"] = os.getloadavg()[0]
    return out


def machine():
    import paddle
    import ppdiffusers

    import ppddpm

    return {"cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(), "paddle": paddle.__version__, "ppdiffusers": ppdiffusers.__version__,
            "device": paddle.device.get_device(), "ppddpm": ppddpm.__version__}


def _bench_nodes_section(model, quick, rounds):
    seeds, steps, rounds = (16, 100, rounds) if not quick else (16, 20, 1)
    print(f"\n8. ab over {seeds} seeds x {steps} steps: 2 nodes x 1 rank (--ips; two network namespaces joined by a "
          f"veth pair) vs 1 process, the whole command, one thread each")
    nodes = bench_nodes(model, seeds, steps, rounds)
    _print_nodes(nodes)
    return nodes


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--model", default=None)
    p.add_argument("--out", default=str(HERE / "results.json"))
    p.add_argument("--repeats", type=int, default=None, help="interleaved rounds (default 5; 3 with --quick)")
    p.add_argument("--only", choices=["instant", "view", "bpd", "nodes"], default=None,
                   help="run this section alone and update it in --out, keeping the other sections")
    args = p.parse_args(argv)
    if args.only:
        return _only(args)
    steps, repeats = (200, 3) if args.quick else (1000, 5)
    repeats = args.repeats or repeats
    import warnings

    warnings.filterwarnings("ignore")
    import ppddpm

    pipe = ppddpm.load_pipeline(args.model)
    pipe.set_progress_bar_config(disable=True)
    results = {"machine": machine(), "steps": steps, "repeats": repeats,
               "model": args.model or "bundled ddpm-digits-8"}
    print(f"machine: {results['machine']}")
    print(f"\n1. recording overhead ({steps} steps, batch 1, {repeats} interleaved rounds) — target every=50 ≤ 1.02x, "
          f"every=1 ≤ 1.05x")
    results["recording"] = bench_recording(pipe, steps, repeats)
    for k, v in results["recording"].items():
        print(f"   {k:28s} {v['median']:.3f}x  (spread {v['min']:.3f}–{v['max']:.3f}; plain {v['base_s']:.2f} s)")
    results["host_reads"] = bench_host_reads(pipe, 60)
    h = results["host_reads"]
    print(f"   host reads in a {h['steps']}-step run: plain {h['plain']}, recorded every=1 {h['recorded']} "
          f"(chunks of {h['chunk']} steps): {h['added_per_step']:.2f} added per step")
    print(f"\n2. A/B cost ({steps} steps) — targets: shadow with 2 variants ≤ 1.05x a plain run; free with 2 variants "
          f"(batched) ≤ 0.6x the two runs one after another")
    results["ab"] = bench_ab(pipe, steps, max(2, repeats - 2))
    for k, v in results["ab"].items():
        print(f"   {k:34s} {v['median']:.3f}x  (spread {v['min']:.3f}–{v['max']:.3f}; "
              f"process CPU time {v['cpu_median']:.3f}x)")
    print(f"   free A/B of 2 variants cannot cost less than half the UNet's batch-2/batch-1 ratio here: "
          f"{results['ab']['UNet batch 2 vs batch 1']['median'] / 2:.3f}x of two runs")
    size = 256
    mem_steps = 200 if args.quick else 1000
    print(f"\n3. peak RSS growth recording {mem_steps} steps of 3x{size}x{size}, x_t and x̂_0 "
          f"(a cheap stand-in denoiser: the recorder's cost does not depend on the model) — target streamed ≤ 150 MB")
    results["memory"] = bench_memory(mem_steps, size)
    for k, v in results["memory"].items():
        if isinstance(v, dict):
            print(f"   {k:16s} +{v['growth_mb']:8.1f} MB  (peak {v['peak_mb']:.0f} MB)")
    print(f"   (two float32 fields of that size hold {results['memory']['expected_float32_mb']:.0f} MB)")
    seeds, p_steps, rounds = (16, 100, max(2, repeats - 2)) if not args.quick else (8, 50, 1)
    print(f"\n4. compare over {seeds} seeds x {p_steps} steps: 1 process vs 2 (paddle.distributed, gloo; one thread "
          f"each) — target ≥ 1.6x")
    results["processes"] = bench_processes(args.model, seeds, p_steps, rounds)
    for key in ("work", "wall"):
        sp = results["processes"][key]
        print(f"   {key:5s} speed-up {sp['median']:.2f}x (spread {sp['min']:.2f}–{sp['max']:.2f}; 1 process "
              f"{sp['other_s']:.1f} s, 2 processes {sp['base_s']:.1f} s)")
    print(f"   reports bitwise equal: {results['processes']['reports_equal']}")
    report_instant_errors(results, repeats)
    results["view"] = bench_view(args.model, repeats)
    print_view(results["view"])
    results["bpd"] = _print_bpd(bench_bpd(pipe, 64 if args.quick else 256))
    results["nodes"] = _bench_nodes_section(args.model, args.quick, max(2, repeats - 2))
    return _write(args, results)


def _print_bpd(b):
    print(f"\n7. the variational bound (ppddpm.likelihood.bpd) of the bundled model on {b['n']} held-out digits — "
          f"targets: all T ≤ 10 min, 50 timesteps ≤ 1 min")
    for key in ("all", "sampled"):
        r = b[key]
        print(f"   {r['timesteps']:4d} timesteps: {r['seconds']:7.1f} s (process CPU {r['cpu_seconds']:.1f} s); "
              f"{r['mean_bpd']:.3f} ± {r['standard_error']:.3f} bits/dim")
    print(f"   load average {b['load_average_before']:.1f} before, {b['load_average_after']:.1f} after "
          f"(2 cores shared)")
    return b


def _only(args):
    """--only instant|view|bpd|nodes: that section measured again, the others kept from --out."""
    import warnings

    warnings.filterwarnings("ignore")
    import ppddpm

    results = json.loads(Path(args.out).read_text()) if Path(args.out).exists() else {}
    if args.only == "instant":
        report_instant_errors(results, args.repeats or (3 if args.quick else 5))
    elif args.only == "view":
        results["view"] = bench_view(args.model, args.repeats or (3 if args.quick else 5))
        print_view(results["view"])
    elif args.only == "bpd":
        results["bpd"] = _print_bpd(bench_bpd(ppddpm.load_pipeline(args.model), 64 if args.quick else 256))
    else:
        rounds = args.repeats or (1 if args.quick else 3)
        results["nodes"] = _bench_nodes_section(args.model, args.quick, rounds)
    key = "instant_errors" if args.only == "instant" else args.only
    if isinstance(results[key], dict) and results.get("machine", {}).get("ppddpm") != ppddpm.__version__:
        results.setdefault("measured_again", {})[key] = ppddpm.__version__     # README names the version
    return _write(args, results)


def _write(args, results):
    Path(args.out).write_text(json.dumps(results, indent=1))
    print(f"\nwrote {args.out}")
    if Path(args.out).resolve() == (HERE / "results.json").resolve():
        sys.path.insert(0, str(HERE.parent / "docs"))
        from readme_blocks import fill_others

        fill_others()          # README's benchmarks block (and the other blocks not computed by `make docs`)
    return results


if __name__ == "__main__":
    main()
