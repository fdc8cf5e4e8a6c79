"""What `ppddpm train` minimises: the article's two training questions as options (MATH.md, "Training
objective" and "The variational bound, term by term").

- `prediction_type` — the model's target: "epsilon" (ε, the paper's choice), "sample" (x_0 itself, the
  paper's "x_0 / μ̃ prediction") or "v_prediction" (v = √ᾱ_t ε − √(1−ᾱ_t) x_0, Salimans & Ho 2022). The saved
  scheduler carries it, so sampling, `verify`, `compare` and `bpd` use it.
- `loss` — "simple": L_simple, the unweighted MSE between the target and the output (eq. 14 for ε);
  "vlb": the true bound with fixed σ_t² = β̃_t, one term per image at its uniform t, bits/dim (the TF code's
  `loss_type="kl"`: `_vb_terms_bpd` with clip_denoised=False); "hybrid": improved DDPM's
  L_simple + λ·L_vlb (Nichol & Dhariwal 2021, λ = 0.001) with a learned variance (`variance_type=
  "learned_range"`, the UNet's output channels doubled) and the mean's gradient stopped inside L_vlb (as
  improved-diffusion does). L_vlb = Σ_t L_t is estimated by T·L_t at the image's uniform t.

x_t is made by the scheduler's own `add_noise` (eq. 4) as before, so the ε + L_simple run is bitwise the
earlier ppddpm's.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from ppddpm._io import atomic_path
from ppddpm.core.bound import bound_tables, split_output, training_target, vb_terms_bpd
from ppddpm.core.formulas import PREDICTION_TYPES
from ppddpm.model.precision import PRECISIONS, UnderflowRecord, autocast, grad_scaler, precision_note

LOSSES = ("simple", "vlb", "hybrid")
OBJECTIVE_KEYS = {"prediction_type": "epsilon", "loss": "simple"}     # and their values before ppddpm 0.5
RECORD = "underflow.json"       # beside the checkpoint: the underflow record up to it, for a resume
DIGIT_LEVELS = 17            # the digits' values 0..16
IMAGE_LEVELS = 256           # 8-bit images


def scheduler_overrides(prediction_type: str, loss: str) -> dict:
    """The saved scheduler's config for this objective: its target, and a learned variance for "hybrid"."""
    return {"prediction_type": prediction_type,
            "variance_type": "learned_range" if loss == "hybrid" else "fixed_small"}


def output_channels(channels: int, loss: str) -> int:
    """The UNet's output channels: the image's, twice that for "hybrid" (mean and variance)."""
    return 2 * channels if loss == "hybrid" else channels


def data_levels(data: str) -> int:
    """Quantisation levels of the training data, for the decoder term L_0 (eq. 13)."""
    return DIGIT_LEVELS if data == "digits" else IMAGE_LEVELS


class Objective:
    """One optimisation step's loss and update, in the run's precision, with the underflow record."""

    def __init__(self, cfg, scheduler, log=print):
        self.cfg, self.scheduler, self.log = cfg, scheduler, log
        self.tables = bound_tables(scheduler)
        self.levels = data_levels(cfg.data)
        self.scaler = grad_scaler(cfg.precision)
        self.record = UnderflowRecord(cfg.log_every)
        if self.scaler is not None:
            self.record.scale_kind = "GradScaler (its scale at each logged step)"
        self.note: Optional[str] = None
        self._checked = False

    def loss(self, output, x0, x_t, noise, t, t_host):
        """(the loss, the values it averages): L_simple's squared errors, or the per-image bound terms."""
        import paddle

        prediction, _ = split_output(self.tables, output, x0.shape[1])
        kind = self.cfg.loss
        if kind == "vlb":
            bits, _ = vb_terms_bpd(self.tables, output, x0, x_t, t, t_host, clip_denoised=False, levels=self.levels)
            return paddle.mean(bits), bits
        squared = paddle.square(paddle.subtract(prediction, training_target(self.tables, x0, noise, t)))
        if kind == "simple":
            return paddle.mean(squared), squared
        bits, _ = vb_terms_bpd(self.tables, output, x0, x_t, t, t_host, clip_denoised=False, levels=self.levels,
                               frozen_mean=True)
        vlb = bits * (self.cfg.vlb_weight * self.tables.num_timesteps)
        return paddle.mean(squared) + paddle.mean(vlb), paddle.concat([squared.reshape([-1]), vlb])

    def step(self, unet, optimizer, x0, t_host, noise, step: int):
        """Forward, backward and the optimizer's update for one batch; returns the loss (a 0-d tensor)."""
        import paddle

        t = paddle.to_tensor(t_host, dtype="int64")
        x_t = self.scheduler.add_noise(x0, noise, t)                          # eq. (4)
        with autocast(self.cfg.precision):
            output = unet(x_t, t).sample
        self._check_precision(output)
        loss, values = self.loss(output.astype("float32"), x0, x_t, noise, t, t_host)
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
        if step % self.cfg.log_every == 0:
            self._record(unet, step, values)
        if self.scaler is not None:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()
        return loss

    def _check_precision(self, output) -> None:
        if not self._checked:
            self._checked = True
            self.note = precision_note(self.cfg.precision, output.dtype)
            if self.note:
                self.log(self.note)

    def _record(self, unet, step: int, values) -> None:
        """The underflow shares of this step's true gradients (unscaled when a GradScaler scaled them)."""
        import paddle

        grads = [p.grad.astype("float32").reshape([-1]) for p in unet.parameters() if p.grad is not None]
        flat = paddle.concat(grads)
        live = None
        if self.scaler is not None:
            live = float(self.scaler._scale)          # the dynamic scale of this step (a host read per logged step)
            flat = flat / live
        self.record.add(step, flat, values.detach(), live)


def config_problems(cfg) -> list:
    """What is wrong with a TrainConfig's objective fields, one phrase each (TrainConfig.check)."""
    problems = []
    for name, allowed in (("prediction_type", PREDICTION_TYPES), ("loss", LOSSES), ("precision", PRECISIONS)):
        if getattr(cfg, name) not in allowed:
            problems.append(f"{name} must be one of {', '.join(allowed)}, got {getattr(cfg, name)!r}")
    if not 0 < cfg.vlb_weight < float("inf"):
        problems.append(f"vlb_weight must be a finite number > 0, got {cfg.vlb_weight}")
    if isinstance(cfg.log_every, bool) or not isinstance(cfg.log_every, int) or cfg.log_every < 1:
        problems.append(f"log_every must be a positive integer, got {cfg.log_every!r}")
    return problems


def objective_change(saved: dict, cfg, out) -> Optional[str]:
    """The one-line refusal when a checkpoint was trained for another target or loss (None when the same):
    a model trained on one objective is not a warm start for another."""
    for key, before in OBJECTIVE_KEYS.items():
        theirs, mine = saved.get(key, before), getattr(cfg, key)
        if theirs != mine:
            flag = "--" + key.replace("_", "-")
            return (f"resume: the checkpoint in {out} was trained with {flag} {theirs}, this run asks for {flag} "
                    f"{mine}; resume with {flag} {theirs}, or train into another --out")
    return None


def save_record(folder, record: UnderflowRecord) -> None:
    """The underflow record up to the checkpoint, beside it (atomic)."""
    with atomic_path(Path(folder) / RECORD) as tmp:
        tmp.write_text(json.dumps(record.as_dict()))


def load_record(folder, before: int, every: int) -> UnderflowRecord:
    """The record kept beside a checkpoint at step `before` (an empty one if there is none, e.g. a checkpoint
    of ppddpm ≤ 0.4 or one damaged: the record only describes the run, it is not needed to continue it)."""
    path = Path(folder) / RECORD
    try:
        return UnderflowRecord.from_dict(json.loads(path.read_text())).trimmed(before)
    except (OSError, ValueError, KeyError, TypeError):
        return UnderflowRecord(every)
