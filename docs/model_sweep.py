"""Issue 13's candidate comparison: short training runs, each scored the same way.

    .venv/bin/python docs/model_sweep.py --steps 1500 --out runs/sweep [NAME ...]

Each candidate is a `TrainConfig` that differs from the baseline (the bundled model's recipe)
in one respect; each is trained from seed 0 for the same number of optimisation steps and then
scored by `ppddpm.analysis.metrics` on n samples (seeds 0…n-1), as `ppddpm eval --n 256` scores them. To
rank candidates cheaply the sweep samples with 100 strided DDPM steps (`--sample-steps`; on one
core, 256 samples at 1000 steps cost 16–50 minutes per candidate); the goal itself is checked on
the winner with 1000 steps. Results are appended to OUT/sweep.json as each candidate finishes,
so an interrupted sweep keeps what it measured; TRAINING.md's comparison table is made from it.
docs/figures/model_sweep.json holds what has been measured so far.

Found on the way: ppdiffusers' EMAModel (without use_ema_warmup) uses the decay
min((1+n)/(10+n), ema_decay), so ema_decay 0.995 and 0.999 are the same run until step 1791 —
native-8 and native-8-ema999 gave identical scores at 1000 steps. Compare EMA decays only on
runs long enough for the cap to bind (0.999 binds from step 8991).
"""
import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BASE = dict(resolution=16, block_out_channels=(32, 64), batch_size=64, lr=2e-3, ema_decay=0.995, warmup=100)
CANDIDATES = {
    "base-16": {},                                  # the recipe of the model bundled before 0.2 (ddpm-digits-16)
    "native-8": dict(resolution=8),
    "native-8-ema999": dict(resolution=8, ema_decay=0.999),
    "native-8-lr1e-3": dict(resolution=8, lr=1e-3),
    "native-8-constant-lr": dict(resolution=8, lr_schedule="constant"),
    "native-8-b128": dict(resolution=8, batch_size=128),
    "native-8-wide": dict(resolution=8, block_out_channels=(64, 128)),
    "native-8-wide-ema999": dict(resolution=8, block_out_channels=(64, 128), ema_decay=0.999),
    "native-8-wide-b128": dict(resolution=8, block_out_channels=(64, 128), batch_size=128),
    "native-8-wide-lr1e-3": dict(resolution=8, block_out_channels=(64, 128), lr=1e-3),
    "native-8-wide-2layers": dict(resolution=8, block_out_channels=(64, 128), layers_per_block=2),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("names", nargs="*", default=list(CANDIDATES))
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--sample-steps", type=int, default=100)
    ap.add_argument("--out", default="runs/sweep")
    args = ap.parse_args()

    import paddle

    from ppddpm.model.loading import load_pipeline
    from ppddpm.analysis.metrics import real_ceiling, sample_images, score
    from ppddpm.model.training import CHECKPOINT, TrainConfig, train

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "sweep.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    for name in args.names:
        key = f"{name}@{args.steps}/{args.sample_steps}"
        if key in results:
            continue
        cfg = TrainConfig(output_dir=str(out / name), steps=args.steps, seed=0, checkpoint_every=250,
                          **dict(BASE, **CANDIDATES[name]))
        resume = (out / name / CHECKPOINT).exists()
        t0 = time.time()
        res = train(cfg, resume=resume, progress=False, log=lambda *a: None)
        train_s = time.time() - t0
        pipe = load_pipeline(str(out / name))
        pipe.set_progress_bar_config(disable=True)
        n_params = sum(int(p.numel()) for p in pipe.unet.parameters())
        t0 = time.time()
        with paddle.no_grad():
            images = sample_images(pipe, n=args.n, seed=0, num_inference_steps=args.sample_steps)
        sample_s = time.time() - t0
        mine = score(images)
        real = real_ceiling(min(args.n, 359), resolution=cfg.resolution)
        results[key] = {"candidate": name, "config": {k: (list(v) if isinstance(v, tuple) else v)
                                                      for k, v in dict(BASE, **CANDIDATES[name]).items()},
                        "steps": args.steps, "sample_steps": args.sample_steps, "params": n_params,
                        "train_seconds": train_s, "sample_seconds": sample_s,
                        "loss_last100": sum(res.losses[-100:]) / 100,
                        "samples": mine.as_dict(), "real": real.as_dict(), **mine.against(real)}
        results_path.write_text(json.dumps(results, indent=1))
        r = results[key]
        print(f"{key:32s} params {n_params:>8d} train {train_s:6.0f}s sample {sample_s:5.0f}s "
              f"conf {r['confidence_share']:.0%} IS {r['is_share']:.0%} FD x{r['fd_ratio']:.2f}", flush=True)


if __name__ == "__main__":
    main()
