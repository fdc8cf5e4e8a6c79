"""What several commands do before or after their own work: the --out folder, the refusal to
overwrite a finished result, loading --model with its checks, the seeds, and which rank speaks."""
from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from ppddpm._io import atomic_path, output_dir, output_lock, said_once
from ppddpm.core.ranks import OUTPUT_VARIABLE, is_lead, on_lead_node, rank
from ppddpm.errors import BadValue, Exists, InputError, check_memory
from ppddpm.model.folder import PIXEL_PIPELINES, read_json
from ppddpm.model.loading import BUNDLED_DIR, BUNDLED_NAME, load_pipeline
from ppddpm.pipelines.latent import KINDS, LatentKind, kind_of


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
    """A finished output is replaced only with --force; on a node other than rank 0's, which writes nothing
    in --out (`on_lead_node`), what its own disk holds there is not in the way."""
    if not on_lead_node():
        return
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

@dataclass(frozen=True)
class DeclaredModel:
    """--model as its own files declare it, read without paddle: what the arguments decide about it
    is answered before a model loads (`declared_model`)."""
    name: str                            # as the one-line errors say it: "the bundled model", or --model
    pipeline: str                        # model_index.json's _class_name
    kind: Optional[LatentKind]           # the latent layout it loads as (`load_pipeline`), None: pixel space
    num_train_timesteps: Optional[int]   # scheduler/scheduler_config.json's T (None: not readable here)


def _json_object(path: Path) -> Optional[dict]:
    """The JSON object in `path` (`ppddpm.model.folder.read_json`: a regular file, never a FIFO), or
    None when it is not one: the loader then says what is wrong with it."""
    try:
        return read_json(path, path.name)
    except InputError:
        return None


def declared_model(model) -> Optional[DeclaredModel]:
    """The bundled model's or a local folder's DeclaredModel; None for a hub id, a missing path or a
    folder whose model_index.json names no pipeline ppddpm records (`load_pipeline` decides those).
    Its class decides its kind as `ppddpm.model.folder` reads it: a latent kind of
    `ppddpm.pipelines.latent.KINDS`, or a pixel pipeline of PIXEL_PIPELINES."""
    bundled = model is None or model in ("bundled", BUNDLED_NAME)
    folder = BUNDLED_DIR if bundled else Path(str(model)).expanduser()
    pipeline = (_json_object(folder / "model_index.json") or {}).get("_class_name")
    kind = next((k for k in KINDS if pipeline in k.classes), None)
    if kind is None and pipeline not in PIXEL_PIPELINES:
        return None
    steps = (_json_object(folder / "scheduler" / "scheduler_config.json") or {}).get("num_train_timesteps")
    steps = steps if isinstance(steps, int) and not isinstance(steps, bool) and steps > 0 else None
    return DeclaredModel("the bundled model" if bundled else str(model), pipeline, kind, steps)


def check_steps(steps: Optional[int], limit: Optional[int]):
    """--steps at most the model's num_train_timesteps (when both are known)."""
    if steps is not None and limit is not None and steps > limit:
        raise BadValue(f"--steps must be at most {limit} (the model's num_train_timesteps), got {steps}")


def declared_checks(args, pixel_only: Optional[str] = None) -> Optional[DeclaredModel]:
    """What --model's files decide, answered before paddle loads: --steps against its T and, for
    `pixel_only` (a command's name), that it is a pixel-space pipeline. Returns the DeclaredModel."""
    declared = declared_model(args.model)
    if declared is not None:
        check_steps(getattr(args, "steps", None), declared.num_train_timesteps)
        if pixel_only and declared.kind is not None:
            raise _not_pixel(pixel_only, declared.pipeline)
    return declared


def load_model(args, images: Optional[int] = None):
    """The pipeline of --model, with the memory of `images` in one UNet call (default --batch-size)
    and --steps checked against it (--steps at most its scheduler's num_train_timesteps)."""
    pipe = load_pipeline(args.model, trust_pickle=getattr(args, "trust_pickle", False))
    batch = getattr(args, "batch_size", None) or 1
    what = f"--batch-size {batch}" if images is None else f"{images} images in one UNet call"
    check_memory(what, (images or batch) * unet_bytes_per_sample(pipe))
    check_steps(getattr(args, "steps", None), pipe.scheduler.config.num_train_timesteps)
    return pipe


def pixel_pipeline(pipe, what):
    """`pipe` if it denoises pixels with a UNet (DDPM-like), else one line: a latent pipeline has no
    image-space forward process or digit scores to show."""
    if kind_of(pipe) is not None or getattr(pipe, "unet", None) is None:
        raise _not_pixel(what, type(pipe).__name__)
    return pipe


def _not_pixel(what, pipeline: str) -> BadValue:
    return BadValue(f"{what} works on pixel-space pipelines (a DDPMPipeline's UNet and scheduler); this is a "
                    f"{pipeline}")


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
    """A rough peak of a denoiser call per sample (float32). A pixel UNet (UNet2DModel, DDPM's):
    ~20 feature maps of each level's channels at its resolution — the skip connections and a ResNet's
    temporaries; measured 13 and 18 on DDPM's CelebA-HQ UNet at 64² and 128² — and each attention
    level's scores (3 maps of its heads × tokens²). Any other denoiser (latent UNets with their text
    attention, transformers): its widest feature map at full resolution ~32 times over (a transformer's
    width is its heads × head dimension)."""
    model = getattr(pipe, "unet", None) or pipe.transformer
    cfg = model.config
    if type(model).__name__ == "UNet2DModel":
        floats = 0.0
        for level, (width, block) in enumerate(zip(cfg.block_out_channels, cfg.down_block_types)):
            tokens = _pixels(pipe) / 4 ** level
            heads = width // cfg.attention_head_dim if cfg.get("attention_head_dim") else 1
            floats += 20 * width * tokens + (3 * heads * tokens ** 2 if "Attn" in block else 0)
        return 4.0 * floats
    widths = cfg.get("block_out_channels") or [cfg.get("num_attention_heads", 16) * cfg.get("attention_head_dim", 72)]
    return 4.0 * max(widths) * _pixels(pipe) * 32
