"""The article's training loop (its `train_losses` and epoch loop) on ppdiffusers parts.

    noise   = randn_like(x0)                       ε ~ N(0, I)
    x_noisy = scheduler.add_noise(x0, noise, t)    eq. (4), TF `q_sample`
    loss    = mse(noise, unet(x_noisy, t))         eq. (14), L_simple, t uniform

with AdamW, gradient clipping, an EMA of the weights (ppdiffusers' `EMAModel`), periodic
atomic checkpoints, `resume=True`, and the result written by `save_pretrained` as a plain
`DDPMPipeline` directory: `DDPMPipeline.from_pretrained(output_dir)` loads it unchanged.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional

import numpy as np

from ._io import atomic_path
from ._progress import wanted
from .errors import BadValue, NotFound, int_problem

CHECKPOINT = "checkpoint.pdparams"
LR_SCHEDULES = ("cosine", "constant")
LOSSES = "train_losses.json"


@dataclass
class TrainConfig:
    output_dir: str
    data: str = "digits"          # "digits" (scikit-learn, offline) or a folder of images
    resolution: int = 8            # the digits' own; larger resolutions are bilinear upscales
    channels: int = 1
    steps: int = 3000
    batch_size: int = 64
    lr: float = 2e-3
    warmup: int = 100             # linear warm-up steps, then `lr_schedule`
    lr_schedule: str = "cosine"   # "cosine": decay from lr to lr / 10 over the remaining steps; "constant"
    weight_decay: float = 0.0
    ema_decay: float = 0.995
    grad_clip: float = 1.0        # global-norm clipping
    seed: int = 0
    checkpoint_every: int = 250
    block_out_channels: tuple = (32, 64)
    layers_per_block: int = 1
    attention: bool = True
    stop_at: int = 0              # stop after this many steps (0: at `steps`); the lr schedule still spans `steps`

    def check(self):
        problems = []
        for name in ("resolution", "steps", "batch_size", "checkpoint_every", "layers_per_block"):
            problem = int_problem(name, getattr(self, name))
            if problem:
                problems.append(problem)
        if not 0 <= self.stop_at <= self.steps:
            problems.append(f"stop_at must be 0 (off) or 1..steps ({self.steps}), got {self.stop_at}")
        if not self.lr > 0:
            problems.append(f"lr must be > 0, got {self.lr}")
        if self.lr_schedule not in LR_SCHEDULES:
            problems.append(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            problems.append(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.resolution % (2 ** (len(self.block_out_channels) - 1)):
            problems.append(f"resolution {self.resolution} must be divisible by "
                            f"{2 ** (len(self.block_out_channels) - 1)} for {len(self.block_out_channels)} UNet levels")
        if problems:
            raise BadValue("; ".join(problems))


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during `train`: a KeyboardInterrupt that says how far the run got (`steps_done`)
    and which checkpoint is on disk (`checkpoint`, at `checkpoint_step`; None before the first)."""

    def __init__(self, steps_done: int, checkpoint: Optional[Path], checkpoint_step: Optional[int]):
        super().__init__(f"training interrupted after {steps_done} steps")
        self.steps_done, self.checkpoint, self.checkpoint_step = steps_done, checkpoint, checkpoint_step


SCHEDULE_KEYS = ("steps", "lr", "warmup", "lr_schedule")     # what learning_rate(cfg, step) depends on


def schedule_change(saved: dict, cfg: "TrainConfig", step: int) -> Optional[str]:
    """A note when a resume changes the learning-rate schedule the checkpoint was trained on
    (another --steps stretches or shortens the cosine decay), or None when it keeps it."""
    changed = {k: saved[k] for k in SCHEDULE_KEYS if k in saved and saved[k] != getattr(cfg, k)}
    if not changed:
        return None
    old = replace(cfg, **changed)
    differ = next((s for s in range(step, max(cfg.steps, old.steps))
                   if not math.isclose(learning_rate(cfg, s), learning_rate(old, s))), None)
    if differ is None:                         # e.g. a longer run whose extra steps are past this one's end
        return None
    what = ", ".join(f"{k} {changed[k]} → {getattr(cfg, k)}" for k in changed)
    return (f"note: this resume changes the learning-rate schedule the checkpoint was trained on ({what}): from "
            f"step {differ} the lr is {learning_rate(cfg, differ):.3g} instead of {learning_rate(old, differ):.3g}; "
            f"resume with the old values to keep it (--stop-at stops early on the same schedule)")


@dataclass
class TrainResult:
    output_dir: Path
    losses: list = field(default_factory=list)   # one float per optimisation step, resumed ones included
    seconds: float = 0.0                          # this run's
    steps_this_run: int = 0                       # optimisation steps this run (after a resume: the new ones)
    seconds_total: float | None = 0.0             # every run's, resumed ones included; None: unknown (an old checkpoint)


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up for `cfg.warmup` steps, then cosine decay from lr to lr/10 (or constant lr)."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    if cfg.lr_schedule == "constant":
        return cfg.lr
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def _rename(state: dict, mapping: dict) -> dict:
    out = {}
    for key, value in state.items():
        for old, new in mapping.items():
            if isinstance(key, str) and key.startswith(old + "_"):
                key = new + key[len(old):]
                break
        out[key] = value
    return out


def _optimizer_state_by_index(state: dict, unet) -> dict:
    """Key optimizer accumulators by parameter position: paddle's auto-generated parameter
    names (`conv2d_2.w_0`) differ between two models built in one process."""
    names = sorted(((p.name, f"param{i}") for i, p in enumerate(unet.parameters())), key=lambda kv: -len(kv[0]))
    return _rename(state, dict(names))


def _optimizer_state_by_name(state: dict, unet) -> dict:
    names = sorted(((f"param{i}", p.name) for i, p in enumerate(unet.parameters())), key=lambda kv: -len(kv[0]))
    return _rename(state, dict(names))


def _steps(bar, cfg, data, rng, scheduler, unet, optimizer, ema, losses, end, save_checkpoint):
    """The optimisation steps of `bar`, a checkpoint every `cfg.checkpoint_every` and at `end`."""
    import paddle

    for step in bar:
        optimizer.set_lr(learning_rate(cfg, step))
        x0 = paddle.to_tensor(data[rng.randint(0, len(data), cfg.batch_size)])
        t = paddle.to_tensor(rng.randint(0, scheduler.config.num_train_timesteps, cfg.batch_size), dtype="int64")
        noise = paddle.randn(x0.shape, dtype=x0.dtype)                          # ε ~ N(0, I)
        x_noisy = scheduler.add_noise(x0, noise, t)                              # eq. (4)
        loss = paddle.nn.functional.mse_loss(unet(x_noisy, t).sample, noise)     # eq. (14)
        loss.backward()
        optimizer.step()
        optimizer.clear_grad()
        ema.step(unet.parameters())
        losses.append(float(loss))
        bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == end:
            save_checkpoint(step + 1)


def train(cfg: TrainConfig, resume: bool = False, progress: Optional[bool] = None, log=print) -> TrainResult:
    """Train a DDPM per `cfg`; returns the losses and the saved pipeline's directory."""
    import paddle
    from ppdiffusers import DDPMPipeline
    from ppdiffusers.training_utils import EMAModel

    from .data import load_dataset
    from .models import ddpm_scheduler, small_unet

    cfg.check()
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = load_dataset(cfg.data, cfg.resolution, cfg.channels)

    paddle.seed(cfg.seed)
    rng = np.random.RandomState(cfg.seed)
    unet = small_unet(cfg.resolution, cfg.channels, cfg.block_out_channels, cfg.layers_per_block, cfg.attention)
    scheduler = ddpm_scheduler()
    optimizer = paddle.optimizer.AdamW(
        learning_rate=cfg.lr, parameters=unet.parameters(), weight_decay=cfg.weight_decay,
        grad_clip=paddle.nn.ClipGradByGlobalNorm(cfg.grad_clip))
    ema = EMAModel(unet.parameters(), decay=cfg.ema_decay, model_cls=type(unet), model_config=unet.config)
    losses, start, seconds_before = [], 0, 0.0
    end = cfg.stop_at or cfg.steps

    ckpt_path = out / CHECKPOINT
    if resume:
        if not ckpt_path.exists():
            raise NotFound(f"resume: no checkpoint at {ckpt_path}")
        ckpt = paddle.load(str(ckpt_path))
        unet.set_state_dict(ckpt["unet"])
        optimizer.set_state_dict(_optimizer_state_by_name(ckpt["optimizer"], unet))
        for s, v in zip(ema.shadow_params, ckpt["ema"]):
            s.copy_(paddle.to_tensor(v), False)
        ema.optimization_step = int(ckpt["step"])
        start, losses = int(ckpt["step"]), list(ckpt["losses"])
        seconds_before = ckpt.get("seconds")     # None: checkpoints before 0.2 did not keep the clock
        if start > end:
            raise BadValue(f"resume: the checkpoint is at step {start}, past where this run stops ({end}); "
                           f"stop at {start} or later")
        rng.set_state(ckpt["numpy_rng"])
        paddle.seed(cfg.seed + start)   # fresh, reproducible paddle stream after a resume
        log(f"resumed from {ckpt_path} at step {start}")
        note = schedule_change(ckpt.get("config") or {}, cfg, start)
        if note:
            log(note)

    saved = [start if resume else None]        # the step of this run's checkpoint on disk

    def save_checkpoint(step):
        with atomic_path(ckpt_path) as tmp:
            paddle.save({"unet": unet.state_dict(), "optimizer": _optimizer_state_by_index(optimizer.state_dict(), unet),
                         "ema": [s.numpy() for s in ema.shadow_params], "step": step,
                         "losses": losses, "numpy_rng": rng.get_state(), "config": vars(cfg),
                         "seconds": None if seconds_before is None else seconds_before + time.time() - t0},
                        str(tmp))
        saved[0] = step

    from tqdm.auto import tqdm

    bar = tqdm(range(start, end), initial=start, total=end, disable=not wanted(progress), desc="train")
    t0 = time.time()
    unet.train()
    try:
        _steps(bar, cfg, data, rng, scheduler, unet, optimizer, ema, losses, end, save_checkpoint)
    except KeyboardInterrupt:
        bar.close()
        raise TrainingInterrupted(len(losses), ckpt_path if saved[0] is not None else None, saved[0]) from None
    seconds = time.time() - t0
    total = None if seconds_before is None else seconds_before + seconds

    ema.copy_to(unet.parameters())
    unet.eval()
    DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(str(out))
    with atomic_path(out / LOSSES) as tmp:
        tmp.write_text(json.dumps({"config": {k: (list(v) if isinstance(v, tuple) else v)
                                              for k, v in vars(cfg).items()},
                                   "losses": losses, "seconds_this_run": seconds,
                                   "seconds_total": total}))
    return TrainResult(out, losses, seconds, end - start, total)
