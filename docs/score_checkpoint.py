"""Score one training checkpoint's EMA weights the way `ppddpm eval` scores a pipeline.

    .venv/bin/python docs/score_checkpoint.py CHECKPOINT [--sample-steps 100] [--n 256] [--out JSON]

`ppddpm train` keeps one checkpoint.safetensors per run and overwrites it every --checkpoint-every
steps; copies taken along the way (`cp checkpoint.safetensors step3500.safetensors`) show whether a run
is still improving. The UNet is rebuilt from the checkpoint's own TrainConfig, the EMA weights
loaded into it, and n samples (seeds 0…n-1) scored against n real held-out digits. With --out the
result is added to that JSON file under "step S @ K sampling steps"; TRAINING.md's table of
training lengths is made from docs/figures/training_length.json.
"""
import argparse
import json
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint")
    ap.add_argument("--trust-pickle", action="store_true", help="read a pickled checkpoint.pdparams of ppddpm <= 0.2")
    ap.add_argument("--sample-steps", type=int, default=100)
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")

    import paddle
    from ppdiffusers import DDPMPipeline

    from ppddpm.analysis.metrics import digit_coverage, real_ceiling, sample_images, score
    from ppddpm.model.builders import ddpm_scheduler, small_unet
    from ppddpm.model.training import read_checkpoint

    ckpt = read_checkpoint(args.checkpoint, trust_pickle=args.trust_pickle)
    cfg = ckpt["config"]
    unet = small_unet(cfg["resolution"], cfg["channels"], tuple(cfg["block_out_channels"]),
                      cfg["layers_per_block"], cfg["attention"])
    for param, ema in zip(unet.parameters(), ckpt["ema"]):
        param.set_value(paddle.to_tensor(ema))
    unet.eval()
    pipe = DDPMPipeline(unet=unet, scheduler=ddpm_scheduler())
    pipe.set_progress_bar_config(disable=True)
    t0 = time.time()
    with paddle.no_grad():
        images = sample_images(pipe, n=args.n, seed=0, num_inference_steps=args.sample_steps)
    seconds = time.time() - t0
    mine, real = score(images), real_ceiling(min(args.n, 359), resolution=cfg["resolution"])
    row = {"step": int(ckpt["step"]), "sample_steps": args.sample_steps, "n": args.n, **mine.against(real),
           "coverage": digit_coverage(images), "loss_last100": float(sum(ckpt["losses"][-100:]) / 100),
           "sample_seconds": seconds, "config": {k: v for k, v in cfg.items() if k != "output_dir"}}
    print(f"step {row['step']} @ {args.sample_steps} sampling steps: confidence {row['confidence_share']:.0%} of real, "
          f"IS {row['is_share']:.0%}, FD x{row['fd_ratio']:.2f}, at least {row['coverage']['fewest']} digits in every "
          f"{row['coverage']['window']} seeds ({seconds:.0f} s)")
    if args.out:
        out = Path(args.out)
        table = json.loads(out.read_text()) if out.exists() else {}
        table[f"step {row['step']} @ {args.sample_steps}"] = row
        out.write_text(json.dumps(table, indent=1))


if __name__ == "__main__":
    main()
