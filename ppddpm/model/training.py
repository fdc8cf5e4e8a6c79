"""The article's training loop (its `train_losses` and epoch loop) on ppdiffusers parts.

    noise   = randn_like(x0)                       ε ~ N(0, I)
    x_noisy = scheduler.add_noise(x0, noise, t)    eq. (4), TF `q_sample`
    loss    = mse(noise, unet(x_noisy, t))         eq. (14), L_simple, t uniform

(the target and the loss are options — ε, x_0 or v; L_simple, the bound or improved DDPM's hybrid:
`ppddpm.model.objective` — and so is the precision, `ppddpm.model.precision`),
with AdamW, gradient clipping, an EMA of the weights (ppdiffusers' `EMAModel`), periodic
atomic checkpoints, `resume=True`, and the result written by `save_pretrained` as a plain
`DDPMPipeline` directory: `DDPMPipeline.from_pretrained(output_dir)` loads it unchanged.

Checkpoints hold no pickle: `checkpoint.safetensors` carries the arrays (UNet weights, optimizer
moments, EMA weights, the numpy RNG's key) and, in the safetensors header's metadata, one JSON
document with the rest (step, losses, config, clock, RNG position). Reading one parses a header
and copies bytes; nothing in it can run. The header is checked by ppddpm before the safetensors
library reads it (`ppddpm.model.tensorfile`), and every UNet weight, optimizer moment and EMA weight
must be a finite float of the run's shapes. Checkpoints of ppddpm ≤ 0.2 (`checkpoint.pdparams`,
`paddle.save`, i.e. pickle) are read only with `trust_pickle=True` (SECURITY.md).
"""
from __future__ import annotations

import json
import math
import re
import tempfile
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

from ppddpm._io import atomic_path, publish
from ppddpm._progress import wanted
from ppddpm.errors import BadValue, NotFound, Untrusted, check_memory, int_problem, regular_file
from ppddpm.model import tensorfile
from ppddpm.model.builders import NORM_GROUPS, ddpm_scheduler, small_unet
from ppddpm.model.data import load_dataset
from ppddpm.model.objective import (Objective, config_problems, load_record, objective_change, output_channels,
                                    save_record, scheduler_overrides)

CHECKPOINT = "checkpoint.safetensors"
PICKLED_CHECKPOINT = "checkpoint.pdparams"      # ppddpm <= 0.2: paddle.save, a pickle
CHECKPOINT_FORMAT = "ppddpm.checkpoint"
ARCHITECTURE = ("resolution", "channels", "block_out_channels", "layers_per_block", "attention")
LR_SCHEDULES = ("cosine", "constant")
LOSSES = "train_losses.json"

# Caps of a run (TrainConfig.check), each far above what models people train use, each refusing at once a
# run that would hang while the UNet is built or run out of memory later
MAX_RESOLUTION = 1024           # pixel-space diffusion is trained up to 1024² (simple diffusion, Hoogeboom et al.
                                # 2023); DDPM's largest models are 256²
MAX_WIDTH = 4096                # channels of a UNet level: Stable Diffusion's widest is 1280, ADM's 1024
MAX_LAYERS_PER_BLOCK = 32       # ResNet layers a level: DDPM and ADM use 2–3; building 3000 takes hours
MAX_STEPS = 3_000_000           # every step's loss goes into the checkpoint's safetensors header, which safetensors
                                # caps at 100 MB (~4.5M losses); DDPM's longest run (LSUN Bedroom) is 2.4M steps
DIGITS = 1797                   # scikit-learn's digits, all upscaled to the resolution when --data is digits


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
    prediction_type: str = "epsilon"   # the model's target: "epsilon", "sample" (x_0) or "v_prediction"
    loss: str = "simple"          # "simple" (eq. 14), "vlb" (the bound, fixed σ²), "hybrid" (+ λ·L_vlb, learned σ²)
    vlb_weight: float = 0.001     # λ of "hybrid" (improved DDPM's)
    precision: str = "float32"    # "float32", "bfloat16" or "float16" (paddle.amp)
    log_every: int = 10           # record the float16/bfloat16 underflow shares every N steps

    @classmethod
    def from_options(cls, options: Mapping) -> "TrainConfig":
        """A config from named options, e.g. `vars(args)` of `ppddpm train`: each key that names a field
        sets it (a list for a tuple field becomes a tuple), `out` is `output_dir`, other keys are
        ignored and fields not given keep their defaults."""
        given = {f.name: options[f.name] for f in fields(cls) if f.name in options}
        if "output_dir" not in given and "out" in options:
            given["output_dir"] = options["out"]
        for f in fields(cls):
            if f.name in given and isinstance(f.default, tuple) and isinstance(given[f.name], list):
                given[f.name] = tuple(given[f.name])
        return cls(**given)

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
        problems += config_problems(self)
        if not problems:
            problems += self._size_problems()
        if problems:
            raise BadValue("; ".join(problems))
        check_memory(f"training at resolution {self.resolution}, batch {self.batch_size}, UNet "
                     f"{list(self.block_out_channels)} × {self.layers_per_block} layers", memory_estimate(self))

    def _size_problems(self) -> list:
        """The caps (MAX_RESOLUTION, MAX_WIDTH, MAX_LAYERS_PER_BLOCK, MAX_STEPS) and the UNet's shape:
        every level's channels a multiple of the GroupNorm groups, the resolution halvable per level."""
        problems, widths = [], list(self.block_out_channels)
        for name, value, cap in (("resolution", self.resolution, MAX_RESOLUTION), ("steps", self.steps, MAX_STEPS),
                                 ("layers_per_block", self.layers_per_block, MAX_LAYERS_PER_BLOCK)):
            if value > cap:
                problems.append(f"{name} must be at most {cap}, got {value}")
        odd = [w for w in widths if int_problem("", w) or w % NORM_GROUPS or w > MAX_WIDTH]
        if not widths or odd:
            problems.append(f"block_out_channels must be multiples of {NORM_GROUPS} (the UNet's GroupNorm groups) "
                            f"up to {MAX_WIDTH}, got {odd or widths}")
        elif self.resolution % (2 ** (len(widths) - 1)):
            problems.append(f"resolution {self.resolution} must be divisible by {2 ** (len(widths) - 1)} for "
                            f"{len(widths)} UNet levels")
        return problems


def unet_parameters(widths, layers: int) -> int:
    """`small_unet`'s parameter count, roughly (within ~6 % of ppdiffusers' own count): per level, L
    down and L + 1 up ResNets (3×3 convolutions, the up ones on the skip-concatenated input) and its
    sampler, ~47 (L + 1) c² in all, and each ResNet's time projection (4 c_0 → c); at the last width
    the middle block and the attention layers, ~(8 L + 44) c²."""
    total = sum(47 * (layers + 1) * c * c + (2 * layers + 1) * 4 * widths[0] * c for c in widths)
    return total + (8 * layers + 44) * widths[-1] ** 2


def memory_estimate(cfg: "TrainConfig") -> float:
    """Bytes a training run of `cfg` holds at its peak, roughly (float32): the UNet's parameters five
    times over (weights, gradients, AdamW's two moments, the EMA); per image of the batch, the feature
    maps kept for the backward pass, ~16 per ResNet a level, and at the last level the attention
    scores of its c/8 heads (scores, softmax and their gradients) and q, k, v, out; and the digits, in
    about three copies while they are upscaled. Measured here: 1.0 to 1.4 times the peak of a training
    step, at 16² and 32² with batches of 1 to 64. (A folder's images are not counted here.)"""
    widths, layers = list(cfg.block_out_channels), cfg.layers_per_block
    levels = [(c, (cfg.resolution >> level) ** 2) for level, c in enumerate(widths)]     # (channels, pixels)
    maps = sum((2 * layers + 2) * 16 * c * pixels for c, pixels in levels)
    if cfg.attention and len(widths) > 1:
        c, tokens = levels[-1]
        maps += (2 * layers + 2) * (4 * (c // 8) * tokens * tokens + 8 * c * tokens)
    data = 3 * DIGITS * cfg.channels * cfg.resolution ** 2 if cfg.data == "digits" else 0
    return 4.0 * (5 * unet_parameters(widths, layers) + cfg.batch_size * maps + data)


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM, as the CLI raises it) during `train`: a KeyboardInterrupt that says how far
    the run got (`steps_done`), which checkpoint is on disk (`checkpoint`, at `checkpoint_step`; None
    before the first) and what stopped it (`cause`, the interrupt that was raised)."""

    def __init__(self, steps_done: int, checkpoint: Optional[Path], checkpoint_step: Optional[int],
                 cause: Optional[BaseException] = None):
        super().__init__(f"training interrupted after {steps_done} steps")
        self.steps_done, self.checkpoint, self.checkpoint_step = steps_done, checkpoint, checkpoint_step
        self.cause = cause


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
    seconds_total: float | None = 0.0             # every run's, resumed ones included; None: unknown (old checkpoint)


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


def _steps(bar, cfg, parts: "_Parts", losses, end, save_checkpoint):
    """The optimisation steps of `bar`, a checkpoint every `cfg.checkpoint_every` and at `end`."""
    import paddle

    unet, optimizer = parts.unet, parts.optimizer
    for step in bar:
        optimizer.set_lr(learning_rate(cfg, step))
        x0 = paddle.to_tensor(parts.data[parts.rng.randint(0, len(parts.data), cfg.batch_size)])
        t = parts.rng.randint(0, parts.scheduler.config.num_train_timesteps, cfg.batch_size)
        noise = paddle.randn(x0.shape, dtype=x0.dtype)                          # ε ~ N(0, I)
        loss = parts.objective.step(unet, optimizer, x0, t, noise, step)        # eq. (4), then eq. (14) or the bound
        optimizer.clear_grad()
        parts.ema.step(unet.parameters())
        losses.append(float(loss))
        bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == end:
            save_checkpoint(step + 1)


class CheckpointError(BadValue):
    """A checkpoint that is truncated, empty, not safetensors, or not ppddpm's."""


def write_checkpoint(path, state: dict) -> Path:
    """Write a training state atomically as safetensors + JSON metadata (module docstring).

    `state`: "unet" and "optimizer" (name → array), "ema" (list of arrays), "numpy_rng" (the tuple
    of `RandomState.get_state()`), and JSON-able "step", "losses", "config", "seconds"."""
    from safetensors.numpy import save_file

    tensors = {f"unet/{k}": np.ascontiguousarray(v) for k, v in state["unet"].items()}
    tensors.update({f"optimizer/{k}": np.ascontiguousarray(v) for k, v in state["optimizer"].items()})
    tensors.update({f"ema/{i}": np.ascontiguousarray(v) for i, v in enumerate(state["ema"])})
    name, keys, pos, has_gauss, cached = state["numpy_rng"]
    tensors["numpy_rng/keys"] = np.ascontiguousarray(keys)
    info = {"format": CHECKPOINT_FORMAT, "format_version": 1, "step": int(state["step"]),
            "losses": [float(v) for v in state["losses"]], "seconds": state.get("seconds"),
            "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in state["config"].items()},
            "ema_count": len(state["ema"]), "numpy_rng": [name, int(pos), int(has_gauss), float(cached)]}
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"ppddpm": json.dumps(info)})
    return Path(path)


def read_checkpoint(path, trust_pickle: bool = False) -> dict:
    """A training state as `write_checkpoint` takes it, from `checkpoint.safetensors`; a pickled
    `checkpoint.pdparams` (ppddpm <= 0.2) only with `trust_pickle=True`, else `Untrusted`."""
    path = regular_file(path, "checkpoint")
    if path.suffix != ".safetensors":
        if not trust_pickle:
            raise Untrusted(f"{path} is a pickled checkpoint (paddle.save, ppddpm <= 0.2): loading it can run code "
                            f"hidden in the file; if you made it yourself, pass --trust-pickle (trust_pickle=True) "
                            f"and the next checkpoint is written as {CHECKPOINT}")
        return _read_pickled(path)
    from safetensors import safe_open

    _check_tensors(path)
    try:
        with safe_open(str(path), framework="np") as f:
            info = json.loads((f.metadata() or {}).get("ppddpm", "null"))
            arrays = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:     # safetensors raises its own SafetensorError, or OSError / ValueError
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated, empty or not safetensors: "
                              f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    if not isinstance(info, dict) or info.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is a safetensors file but not a ppddpm training checkpoint "
                              f"(no ppddpm metadata); resume from the --out folder of `ppddpm train`")
    try:
        part = lambda prefix: {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}  # noqa: E731
        name, pos, has_gauss, cached = info["numpy_rng"]
        return {"unet": part("unet/"), "optimizer": part("optimizer/"),
                "ema": [arrays[f"ema/{i}"] for i in range(int(info["ema_count"]))],
                "numpy_rng": (name, arrays["numpy_rng/keys"], pos, has_gauss, cached), "step": int(info["step"]),
                "losses": list(info["losses"]), "config": dict(info["config"]), "seconds": info.get("seconds")}
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path} is an incomplete ppddpm checkpoint (missing or malformed "
                              f"{type(exc).__name__}: {exc})") from None


TRAINED = ("unet/", "optimizer/", "ema/")      # the checkpoint's float tensors: weights, Adam moments, EMA weights


def _check_tensors(path: Path) -> None:
    """The checkpoint's safetensors header checked by ppddpm before the safetensors library reads it
    (`ppddpm.model.tensorfile`), every UNet weight, optimizer moment and EMA weight stored as a float
    and finite: CheckpointError in one line naming the tensor otherwise."""
    try:
        header = tensorfile.read_header(path, "checkpoint")
        trained = [n for n in header.tensors if n.startswith(TRAINED)]
        stored = next((n for n in trained if header.tensors[n].dtype not in tensorfile.FLOATS), None)
        if stored is not None:
            raise BadValue(f"{path}: tensor {stored!r} is stored as {header.tensors[stored].dtype}; a weight, "
                           f"moment or EMA weight is a float ({', '.join(tensorfile.FLOATS)})")
        tensorfile.check_finite(header, trained)
    except BadValue as exc:
        raise CheckpointError(str(exc)) from None


def _read_pickled(path: Path) -> dict:
    import paddle

    try:
        ckpt = paddle.load(str(path), return_numpy=True)
        ckpt["unet"], ckpt["optimizer"], ckpt["ema"], ckpt["step"], ckpt["losses"]   # noqa: B018  (all present)
    except Exception as exc:      # a pickle fails in as many ways as it can be damaged
        raise CheckpointError(f"{path} is not a readable ppddpm checkpoint ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    ckpt.setdefault("seconds", None)       # checkpoints before 0.2 did not keep the clock
    return ckpt


def _resume_state(out: Path, cfg: "TrainConfig", trust_pickle: bool) -> dict:
    """The checkpoint in `out` (safetensors first), checked against this run's architecture."""
    path = out / CHECKPOINT if (out / CHECKPOINT).exists() else out / PICKLED_CHECKPOINT
    if not path.exists():
        raise NotFound(f"resume: no checkpoint at {out / CHECKPOINT}")
    ckpt = read_checkpoint(path, trust_pickle=trust_pickle)
    saved = ckpt.get("config") or {}
    for key in ARCHITECTURE:
        theirs, mine = saved.get(key), getattr(cfg, key)
        if theirs is not None and list(np.atleast_1d(theirs)) != list(np.atleast_1d(mine)):
            raise BadValue(f"resume: the checkpoint in {out} was trained with {key} {theirs}, this run asks for "
                           f"{mine}; resume with the same {key}, or train into another --out")
    return ckpt


def _misfit(ckpt: dict, unet) -> Optional[str]:
    """What of a checkpoint does not fit this run's UNet — its weights, its EMA weights (one per
    parameter), its Adam moments (each its parameter's shape) — or None when all of it does."""
    mine = {k: tuple(v.shape) for k, v in unet.state_dict().items()}
    theirs = {k: tuple(np.shape(v)) for k, v in ckpt["unet"].items()}
    if mine != theirs:
        return f"its UNet weights do not fit this run's UNet ({len(theirs)} tensors vs {len(mine)}; shapes differ)"
    params = [tuple(p.shape) for p in unet.parameters()]
    if [tuple(np.shape(v)) for v in ckpt["ema"]] != params:
        return f"its {len(ckpt['ema'])} EMA weights do not fit this run's {len(params)} UNet parameters"
    for key, value in ckpt["optimizer"].items():
        moment = re.match(r"param(\d+)_moment[12]_", key)
        if moment and (int(moment[1]) >= len(params) or tuple(np.shape(value)) != params[int(moment[1])]):
            return f"its optimizer moment {key} does not fit this run's UNet parameters"
    return None


def _apply_state(ckpt: dict, unet, optimizer, ema, path) -> None:
    """Load a checkpoint's weights into the run; shapes are checked first (a foreign state is one error)."""
    import paddle

    misfit = _misfit(ckpt, unet)
    if misfit:
        raise CheckpointError(f"{path}: {misfit}; it is another model's")
    unet.set_state_dict({k: paddle.to_tensor(v) for k, v in ckpt["unet"].items()})
    optimizer.set_state_dict(_optimizer_state_by_name({k: paddle.to_tensor(v) for k, v in ckpt["optimizer"].items()},
                                                      unet))
    for s, v in zip(ema.shadow_params, ckpt["ema"]):
        s.copy_(paddle.to_tensor(v), False)
    ema.optimization_step = int(ckpt["step"])


@dataclass
class _Parts:
    """What a run trains and draws from: the UNet, its optimizer and weight EMA, the scheduler that
    noises (eq. 4), the data and the RNG of the batches and timesteps."""
    unet: Any
    scheduler: Any
    optimizer: Any
    ema: Any
    data: np.ndarray
    rng: np.random.RandomState
    objective: Any = None        # the loss, its precision and its underflow record (`ppddpm.model.objective`)


def _build(cfg: TrainConfig) -> _Parts:
    """A fresh run of `cfg`: the data, then (seeded) the UNet's initial weights and the batches' RNG."""
    import paddle
    from ppdiffusers.training_utils import EMAModel

    data = load_dataset(cfg.data, cfg.resolution, cfg.channels)
    paddle.seed(cfg.seed)
    rng = np.random.RandomState(cfg.seed)
    unet = small_unet(cfg.resolution, cfg.channels, cfg.block_out_channels, cfg.layers_per_block, cfg.attention,
                      out_channels=output_channels(cfg.channels, cfg.loss))
    scheduler = ddpm_scheduler(**scheduler_overrides(cfg.prediction_type, cfg.loss))
    optimizer = paddle.optimizer.AdamW(
        learning_rate=cfg.lr, parameters=unet.parameters(), weight_decay=cfg.weight_decay,
        grad_clip=paddle.nn.ClipGradByGlobalNorm(cfg.grad_clip))
    ema = EMAModel(unet.parameters(), decay=cfg.ema_decay, model_cls=type(unet), model_config=unet.config)
    return _Parts(unet, scheduler, optimizer, ema, data, rng)


def _resume(parts: _Parts, cfg: TrainConfig, out: Path, end: int, trust_pickle: bool, log):
    """The checkpoint in `out` loaded into `parts`; returns its step, its losses and its clock (None:
    a checkpoint before 0.2, which did not keep one)."""
    import paddle

    ckpt = _resume_state(out, cfg, trust_pickle)
    refusal = objective_change(ckpt.get("config") or {}, cfg, out)
    if refusal:
        raise BadValue(refusal)
    _apply_state(ckpt, parts.unet, parts.optimizer, parts.ema, out / CHECKPOINT)
    start = int(ckpt["step"])
    if start > end:
        raise BadValue(f"resume: the checkpoint is at step {start}, past where this run stops ({end}); "
                       f"stop at {start} or later")
    parts.rng.set_state(ckpt["numpy_rng"])
    parts.objective.record = load_record(out, start, cfg.log_every)
    paddle.seed(cfg.seed + start)   # fresh, reproducible paddle stream after a resume
    log(f"resumed from {out} at step {start}")
    note = schedule_change(ckpt.get("config") or {}, cfg, start)
    if note:
        log(note)
    return start, list(ckpt["losses"]), ckpt.get("seconds")


def _save_state(path: Path, parts: _Parts, cfg: TrainConfig, step: int, losses: list, seconds) -> None:
    """The run's checkpoint at `step` (`write_checkpoint`)."""
    unet = parts.unet
    write_checkpoint(path, {
        "unet": {k: v.numpy() for k, v in unet.state_dict().items()},
        "optimizer": {k: v.numpy() for k, v in _optimizer_state_by_index(parts.optimizer.state_dict(), unet).items()},
        "ema": [s.numpy() for s in parts.ema.shadow_params], "step": step, "losses": losses,
        "numpy_rng": parts.rng.get_state(), "config": vars(cfg), "seconds": seconds})


def _optimise(parts: _Parts, cfg: TrainConfig, path: Path, steps: range, losses: list, seconds_before,
              progress, saved: Optional[int]) -> float:
    """Run the optimisation `steps`, checkpointing to `path` (`saved`: the step of the checkpoint already
    there, None if none); returns this run's seconds. Ctrl-C raises `TrainingInterrupted`."""
    from tqdm.auto import tqdm

    saved = [saved]

    def save_checkpoint(step):
        # the record first: a stop between the two leaves a record ahead of the checkpoint, which a resume
        # trims to the checkpoint's step (never one behind it)
        save_record(path.parent, parts.objective.record)
        _save_state(path, parts, cfg, step, losses,
                    None if seconds_before is None else seconds_before + time.time() - t0)
        saved[0] = step

    bar = tqdm(steps, initial=steps.start, total=steps.stop, disable=not wanted(progress), desc="train")
    t0 = time.time()
    parts.unet.train()
    try:
        _steps(bar, cfg, parts, losses, steps.stop, save_checkpoint)
    except KeyboardInterrupt as stop:
        bar.close()
        saved[0] = _step_on_disk(path, saved[0])     # a stop just after the rename, before `saved` heard of it
        raise TrainingInterrupted(len(losses), path if saved[0] is not None else None, saved[0], stop) from None
    return time.time() - t0


def _step_on_disk(path: Path, known: Optional[int]) -> Optional[int]:
    """The step of the checkpoint at `path`, as its metadata says (where a resume starts); `known` when
    there is none to read."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="np") as f:
            return int(json.loads((f.metadata() or {})["ppddpm"])["step"])
    except (OSError, SafetensorError, KeyError, TypeError, ValueError):
        return known


def _save_pipeline(out: Path, cfg: TrainConfig, parts: _Parts, losses: list, seconds: float, total) -> None:
    """The EMA weights as a `DDPMPipeline` directory in `out`, and the losses beside it (LOSSES).
    ppdiffusers writes the pipeline into a fresh hidden folder; each of its entries (model_index.json,
    unet/, scheduler/) then replaces its name in `out` (`ppddpm._io.publish`): a link left at one of
    those names is replaced, never written through."""
    from ppdiffusers import DDPMPipeline

    parts.ema.copy_to(parts.unet.parameters())
    parts.unet.eval()
    with tempfile.TemporaryDirectory(prefix=".pipeline.", suffix=".part", dir=out) as staging:
        DDPMPipeline(unet=parts.unet, scheduler=parts.scheduler).save_pretrained(staging)
        for entry in sorted(Path(staging).iterdir(), key=lambda p: p.name == "model_index.json"):   # the index last
            publish(entry, out / entry.name)
    with atomic_path(out / LOSSES) as tmp:
        tmp.write_text(json.dumps({"config": {k: (list(v) if isinstance(v, tuple) else v)
                                              for k, v in vars(cfg).items()},
                                   "losses": losses, "seconds_this_run": seconds,
                                   "seconds_total": total, "precision_note": parts.objective.note,
                                   "underflow": parts.objective.record.as_dict()}))


def train(cfg: TrainConfig, resume: bool = False, progress: Optional[bool] = None, log=print,
          trust_pickle: bool = False) -> TrainResult:
    """Train a DDPM per `cfg`; returns the losses and the saved pipeline's directory.
    `resume`: continue from the checkpoint in `cfg.output_dir` (a pickled one of ppddpm <= 0.2 only
    with `trust_pickle=True`)."""
    cfg.check()
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    parts = _build(cfg)
    parts.objective = Objective(cfg, parts.scheduler, log)
    end = cfg.stop_at or cfg.steps
    start, losses, seconds_before = _resume(parts, cfg, out, end, trust_pickle, log) if resume else (0, [], 0.0)
    seconds = _optimise(parts, cfg, out / CHECKPOINT, range(start, end), losses, seconds_before, progress,
                        saved=start if resume else None)
    total = None if seconds_before is None else seconds_before + seconds
    _save_pipeline(out, cfg, parts, losses, seconds, total)
    return TrainResult(out, losses, seconds, end - start, total)
