"""What several commands do before or after their own work: the --out folder, the refusal to
overwrite a finished result, loading --model with its checks, the seeds, and which rank speaks."""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from ppddpm._io import atomic_path, output_dir, output_lock, said_once
from ppddpm.cli.signals import sigterm_stops
from ppddpm.core.ranks import OUTPUT_VARIABLE, is_lead, on_lead_node, rank
from ppddpm.errors import BadValue, Exists, available_memory
from ppddpm.model.loading import load_pipeline
from ppddpm.pipelines.latent import kind_of


def output_folder(args) -> Path:
    """--out as a folder (created if missing), locked for this run until the command ends
    (`ppddpm._io.output_lock`: a second run into it is refused); a file in its place, a path that
    cannot be a folder, or a folder that cannot be written, is one clear error (`ppddpm._io.output_dir`).
    On the other nodes of a multi-node run nothing is checked or made: only rank 0's node writes
    --out (`share_folder`)."""
    if not on_lead_node():
        return Path(args.out)
    out = output_dir(args.out, "--out")
    if is_lead() and getattr(args, "_hold", None) is not None:
        with said_once(out, "--out", every=True):
            args._hold(output_lock(out))
    return out


def share_folder(out: Path) -> Path:
    """Where this rank writes the files of its share of the work: `out` on rank 0's node; on another
    node of a multi-node run, a folder of its own in the launch's scratch folder (or a temporary one),
    whose files `carried` sends to rank 0 with the gathered results and `land` writes into --out."""
    if on_lead_node():
        return out
    return Path(tempfile.mkdtemp(prefix=f"rank{rank()}-", dir=os.environ.get(OUTPUT_VARIABLE)))


def carried(folder: Path, out: Path, names) -> dict:
    """The files `names` (in `folder`) as bytes, to be written into --out by rank 0 (`land`); nothing
    when `folder` is --out itself."""
    return {} if folder == out else {name: (folder / name).read_bytes() for name in names}


def land(out: Path, files: dict):
    """Files another node made (`carried`), written into --out, each atomically."""
    for name, data in files.items():
        with atomic_path(out / name, suffix=Path(name).suffix) as tmp:
            tmp.write_bytes(data)


def refuse_overwrite(args, path: Path, hint: str = ""):
    """A finished output is replaced only with --force."""
    if path.exists() and not getattr(args, "force", False):
        raise Exists(f"{path} exists (a finished earlier run){hint}; pass --force to overwrite it, or choose "
                     f"another --out")


def distinct_seeds(args):
    """--seed 0,0 or 0-3,2: each seed runs once; a note says which were named twice."""
    if not isinstance(args.seed, list):
        return
    distinct = list(dict.fromkeys(args.seed))
    if len(distinct) < len(args.seed):
        twice = sorted({s for s in args.seed if args.seed.count(s) > 1})
        print(f"ppddpm {args.command}: note: --seed names {', '.join(map(str, twice))} more than once; "
              f"running each seed once", file=sys.stderr)
    args.seed = distinct[0] if len(distinct) == 1 else distinct


def seed_span(seeds) -> str:
    """0-15 for a range, 0…9 for any other list."""
    return f"{seeds[0]}-{seeds[-1]}" if seeds == list(range(seeds[0], seeds[-1] + 1)) else f"{seeds[0]}…{seeds[-1]}"


# --------------------------------------------------------------------------- the model

def load_model(args):
    """The pipeline of --model, with the memory of --batch-size and --steps checked against it
    (--steps at most its scheduler's num_train_timesteps)."""
    pipe = load_pipeline(args.model, trust_pickle=getattr(args, "trust_pickle", False))
    sigterm_stops()                      # again: importing paddle put its own C-level SIGTERM handler in place
    batch = getattr(args, "batch_size", None) or 1
    check_memory(f"--batch-size {batch}", batch * unet_bytes_per_sample(pipe))
    steps, limit = getattr(args, "steps", None), pipe.scheduler.config.num_train_timesteps
    if steps is not None and steps > limit:
        raise BadValue(f"--steps must be at most {limit} (the model's num_train_timesteps), got {steps}")
    return pipe


def pixel_pipeline(pipe, what):
    """`pipe` if it denoises pixels with a UNet (DDPM-like), else one line: a latent pipeline has no
    image-space forward process or digit scores to show."""
    if kind_of(pipe) is not None or getattr(pipe, "unet", None) is None:
        raise BadValue(f"{what} works on pixel-space pipelines (a DDPMPipeline's UNet and scheduler); this is a "
                       f"{type(pipe).__name__}")
    return pipe


def check_memory(what: str, nbytes: float):
    """Refuse work whose estimated memory exceeds what this machine has available now."""
    free = available_memory()
    if free is None:
        return                                   # no estimate on this platform: nothing to say
    if nbytes > free:
        raise BadValue(f"{what} needs about {nbytes / 2 ** 30:.1f} GB of memory by a rough estimate, and "
                       f"{free / 2 ** 30:.1f} GB are available; ask for less")


def _denoiser_config(pipe):
    """The config of the pipeline's denoiser: its UNet, or a DiT's transformer."""
    return (getattr(pipe, "unet", None) or pipe.transformer).config


def _pixels(pipe) -> int:
    size = _denoiser_config(pipe).sample_size
    return int(np.prod(size)) if not isinstance(size, int) else size * size


def image_bytes(pipe) -> float:
    """One sample's bytes (float32)."""
    return 4.0 * _denoiser_config(pipe).in_channels * _pixels(pipe)


def unet_bytes_per_sample(pipe) -> float:
    """A rough peak of a denoiser call per sample: its widest feature map (float32) ~32 times over
    (a transformer's width is its heads × head dimension)."""
    cfg = _denoiser_config(pipe)
    widths = cfg.get("block_out_channels") or [cfg.get("num_attention_heads", 16) * cfg.get("attention_head_dim", 72)]
    return 4.0 * max(widths) * _pixels(pipe) * 32
