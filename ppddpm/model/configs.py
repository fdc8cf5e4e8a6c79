"""A model folder's configs, checked before anything is built from them.

ppdiffusers builds whatever a `config.json` describes: a UNet with `"sample_size": -8` crashes
the interpreter when it samples (a negative shape), four blocks 4096 channels wide allocate
gigabytes, `"beta_end": 2.0` gives β > 1 and NaN from the first step. `check_model_config` and
`check_scheduler_config` refuse such values in one line naming the file and the key, before
anything is built: every size a positive integer up to a cap far above any released model of the
families ppddpm records (Stable Diffusion's widest block is 1280 channels, DiT-XL has 28 layers),
and the schedule 0 < β_start ≤ β_end ≤ 1 (MATH.md, Notation: β_t ∈ (0, 1)).
"""
from __future__ import annotations

import math

from ppddpm.errors import BadValue
from ppddpm.storage.meta import MAX_TRAIN_TIMESTEPS      # DDPM's T is 1000; a schedule is T numbers per array

MAX_LEVELS = 8                    # entries of a per-level list (block_out_channels, down_block_types, …)
# config key → the largest value accepted; every value is an integer ≥ 1 (a list: each entry)
SIZE_CAPS = {
    "sample_size": 2048, "in_channels": 256, "out_channels": 256, "latent_channels": 256,
    "block_out_channels": 2048, "layers_per_block": 32, "transformer_layers_per_block": 32,
    "norm_num_groups": 2048, "attention_head_dim": 2048, "num_attention_heads": 256,
    "cross_attention_dim": 8192, "num_layers": 128, "patch_size": 64, "num_embeds_ada_norm": 100_000,
    "num_vq_embeddings": 65_536, "vq_embed_dim": 256, "num_class_embeds": 100_000,
    "vocab_size": 1_000_000, "hidden_size": 16_384, "intermediate_size": 65_536, "num_hidden_layers": 128,
    "max_position_embeddings": 65_536, "projection_dim": 16_384,
}
MAX_WIDTH = 16_384              # a transformer's heads × head size (DiT-XL: 1152)
MAX_POSITIONS = 1 << 26         # numbers in a patched transformer's positional table (DiT-XL: 16² × 1152)
LEVEL_LISTS = ("block_out_channels", "down_block_types", "up_block_types")
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid", "exp")
PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")
VARIANCE_TYPES = ("fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log", "learned", "learned_range")
CHOICES = {"beta_schedule": BETA_SCHEDULES, "prediction_type": PREDICTION_TYPES, "variance_type": VARIANCE_TYPES,
           "timestep_spacing": ("linspace", "leading", "trailing")}


def brief(value, limit: int = 60) -> str:
    """repr(value), cut to `limit` characters with … (a crafted file's values can be megabytes long)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _size_problem(key: str, value, cap: int):
    entries = value if isinstance(value, list) else [value]
    if isinstance(value, list) and not 1 <= len(value) <= MAX_LEVELS:
        return f"{key} must list 1 to {MAX_LEVELS} values, got {len(value)}"
    if not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= cap for v in entries):
        return f"{key} must be {'integers' if isinstance(value, list) else 'an integer'} from 1 to {cap}, " \
               f"got {brief(value)}"
    return None


def check_model_config(config: dict, where: str) -> None:
    """The sizes of a model's config.json (SIZE_CAPS), its per-level lists of one length, groups that
    divide the channels they normalise, and a finite positive VAE scaling factor."""
    for key, cap in SIZE_CAPS.items():
        problem = config.get(key) is not None and _size_problem(key, config[key], cap)
        if problem:
            raise BadValue(f"{where}: {problem}")
    lengths = {k: len(config[k]) for k in LEVEL_LISTS if isinstance(config.get(k), list)}
    if len(set(lengths.values())) > 1:
        raise BadValue(f"{where}: {', '.join(lengths)} must list one value per level, got "
                       f"{', '.join(f'{k} {n}' for k, n in lengths.items())}")
    _check_patches(config, where)
    groups, widths = config.get("norm_num_groups"), config.get("block_out_channels")
    if isinstance(groups, int) and isinstance(widths, list) and any(w % groups for w in widths):
        raise BadValue(f"{where}: norm_num_groups {groups} must divide every block_out_channels {widths}")
    if "scaling_factor" in config and not (_is_number(config["scaling_factor"]) and config["scaling_factor"] > 0):
        raise BadValue(f"{where}: scaling_factor must be a finite number > 0, got {brief(config['scaling_factor'])}")


def _check_patches(config: dict, where: str) -> None:
    """A transformer's width (heads × head size) and the positional table it computes as it is built
    ((sample_size / patch_size)² × width numbers, not lazily): at most MAX_WIDTH and MAX_POSITIONS."""
    heads, size = config.get("num_attention_heads"), config.get("attention_head_dim")
    if not (isinstance(heads, int) and isinstance(size, int)):
        return
    if heads * size > MAX_WIDTH:
        raise BadValue(f"{where}: num_attention_heads × attention_head_dim must be at most {MAX_WIDTH}, got "
                       f"{heads} × {size}")
    sample, patch = config.get("sample_size"), config.get("patch_size")
    if isinstance(sample, int) and isinstance(patch, int) and (sample // patch) ** 2 * heads * size > MAX_POSITIONS:
        raise BadValue(f"{where}: (sample_size / patch_size)² × width must be at most {MAX_POSITIONS} (a table of "
                       f"positions built eagerly), got ({sample} / {patch})² × {heads * size}")


def _check_schedule_length(config: dict, where: str) -> int:
    value = config.get("num_train_timesteps", 1000)
    if not _is_number(value) or not 1 <= value <= MAX_TRAIN_TIMESTEPS or value != int(value):
        raise BadValue(f"{where}: num_train_timesteps must be an integer from 1 to {MAX_TRAIN_TIMESTEPS}, "
                       f"got {brief(value)}")
    return int(value)


def check_scheduler_config(config: dict, where: str) -> None:
    """num_train_timesteps T from 1 to MAX_TRAIN_TIMESTEPS; 0 < beta_start ≤ beta_end ≤ 1;
    trained_betas, where given, T numbers in (0, 1]; the named choices (beta_schedule, …) ones
    ppdiffusers knows; clip_sample_range a finite number > 0."""
    steps = _check_schedule_length(config, where)
    start, end = config.get("beta_start", 1e-4), config.get("beta_end", 0.02)
    if not (_is_number(start) and _is_number(end) and 0 < start <= end <= 1):
        raise BadValue(f"{where}: beta_start and beta_end must satisfy 0 < beta_start ≤ beta_end ≤ 1, got "
                       f"{brief(start)} and {brief(end)}")
    betas = config.get("trained_betas")
    if betas is not None and not (isinstance(betas, list) and len(betas) == steps
                                  and all(_is_number(b) and 0 < b <= 1 for b in betas)):
        raise BadValue(f"{where}: trained_betas must be {steps} numbers in (0, 1] (one per training step)")
    for key, allowed in CHOICES.items():
        if config.get(key) is not None and config[key] not in allowed:
            raise BadValue(f"{where}: {key} must be one of {', '.join(allowed)}, got {brief(config[key])}")
    if "clip_sample_range" in config and not (_is_number(config["clip_sample_range"])
                                              and config["clip_sample_range"] > 0):
        raise BadValue(f"{where}: clip_sample_range must be a finite number > 0, got "
                       f"{brief(config['clip_sample_range'])}")
