"""Copy a finished `ppddpm train` run into the package as the bundled model, with its record.

    .venv/bin/python docs/ship_model.py RUN_DIR "COMMAND THAT PRODUCED IT"

Copies model_index.json, unet/, scheduler/ and train_losses.json (not the checkpoint) to
ppddpm/assets/ddpm-digits-16/, draws loss.png and writes TRAINING.md.
"""
import json
import shutil
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DEST = ROOT / "ppddpm" / "assets" / "ddpm-digits-16"


def main(run, command):
    run = Path(run)
    record = json.loads((run / "train_losses.json").read_text())
    cfg, losses = record["config"], np.array(record["losses"])
    if DEST.exists():
        shutil.rmtree(DEST)
    DEST.mkdir(parents=True)
    shutil.copy(run / "model_index.json", DEST)
    shutil.copy(run / "train_losses.json", DEST)
    for sub in ("unet", "scheduler"):
        shutil.copytree(run / sub, DEST / sub)

    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 3), dpi=100)
    ax = fig.subplots()
    k = 50
    ax.semilogy(losses, color="0.8", lw=0.5, label="per step")
    ax.semilogy(np.arange(k - 1, len(losses)), np.convolve(losses, np.ones(k) / k, "valid"), label=f"{k}-step mean")
    ax.set_xlabel("optimisation step")
    ax.set_ylabel("MSE on ε, eq. (14)")
    ax.legend()
    ax.set_title("ddpm-digits-16 training loss")
    fig.tight_layout()
    fig.savefig(DEST / "loss.png")

    from ppdiffusers import UNet2DModel

    n_params = sum(int(np.prod(p.shape)) for p in UNet2DModel.from_pretrained(str(DEST / "unet")).parameters())
    size = sum(p.stat().st_size for p in DEST.rglob("*") if p.is_file())
    minutes = record.get("seconds_this_run", 0) / 60
    (DEST / "TRAINING.md").write_text(f"""# ddpm-digits-16 — the model ppddpm ships

A `DDPMPipeline` (ppdiffusers 0.29) trained on this project's 2-core CPU; `ppddpm.load_pipeline()`
loads it offline, and so does plain `DDPMPipeline.from_pretrained(<this folder>)`.

| | |
|---|---|
| data | scikit-learn's digits, the train split of `ppddpm.data` (1438 of 1797 images; a fixed permutation with seed 0 holds out 359 for `ppddpm.metrics`), bilinear 8x8 → 16x16, in [−1, 1] |
| model | `UNet2DModel` 16x16x1, block_out_channels {tuple(cfg['block_out_channels'])}, layers_per_block {cfg['layers_per_block']}, self-attention at 8x8, GroupNorm groups 8: {n_params:,} parameters |
| scheduler | `DDPMScheduler`, T = 1000, β linear 1e-4 → 0.02, fixed_small, clip_sample=True |
| objective | eq. (14): MSE between ε and ε_θ(√ᾱ_t x_0 + √(1−ᾱ_t) ε, t), t uniform |
| optimiser | AdamW lr {cfg['lr']} (linear warm-up {cfg['warmup']} steps, cosine decay to lr/10), weight decay {cfg['weight_decay']}, global-norm clipping {cfg['grad_clip']} |
| EMA | ppdiffusers' `EMAModel`, decay {cfg['ema_decay']} (warm-up (1+n)/(10+n)); the EMA weights are what is saved |
| steps | {len(losses)} at batch {cfg['batch_size']}, seed {cfg['seed']} |
| time | {minutes:.0f} minutes on 2 CPU cores (paddle 3.3.1), while other work shared the machine |
| loss | {losses[:50].mean():.3f} (first 50 steps) → {losses[-100:].mean():.4f} (last 100); `train_losses.json` has every step, `loss.png` the curve |
| size | {size / 2 ** 20:.2f} MB in all |

Reproduce:

```bash
{command}
```

The run that made this folder called `ppddpm.training.train` with exactly that `TrainConfig`
(the command's flags map one to one onto it; everything else is at its default), and
`docs/ship_model.py` copied the result here. Quality figures: README, "The bundled model".
""")
    print(f"shipped {DEST} ({size / 2 ** 20:.2f} MB, {n_params:,} parameters)")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
