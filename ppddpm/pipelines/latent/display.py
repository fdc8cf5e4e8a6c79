"""What the pictures show of a latent run: decoded frames where the run kept them, else the latent
channels side by side (`displayable`), and the prompt or class label for their titles (`caption`).
No paddle, no ppdiffusers: a run file is enough.
"""
from __future__ import annotations

import numpy as np

from ppddpm.storage.format import DECODED_SUFFIX


LATENT_RANGE = 3.0        # latents (unit variance by the choice of scaling_factor) shown on [−3, 3]


def channels_view(frames) -> np.ndarray:
    """[..., C, h, w] latents → [..., 1, h, C·w]: the channels side by side as one gray image, on
    [−LATENT_RANGE, LATENT_RANGE] mapped to the display's [−1, 1]."""
    frames = np.asarray(frames, np.float32) / LATENT_RANGE
    return np.concatenate([frames[..., c: c + 1, :, :] for c in range(frames.shape[-3])], axis=-1)


def caption(traj) -> str:
    """The prompt or class label (and guidance scale) of a latent run, for titles; "" otherwise."""
    cond = traj.meta.get("conditioning") or {}
    parts = []
    if isinstance(cond.get("prompt"), (str, list)):
        parts.append(f"prompt {cond['prompt']!r}" if isinstance(cond["prompt"], str) else f"prompts {cond['prompt']}")
    elif "prompt_embeds" in cond:
        parts.append("prompt given as embeddings")
    if "class_labels" in cond:
        names = cond.get("class_names")
        parts.append("class " + ", ".join(f"{c} ({n})" if names else f"{c}"
                                          for c, n in zip(cond["class_labels"], names or cond["class_labels"])))
    if cond.get("negative_prompt"):
        parts.append(f"negative {cond['negative_prompt']!r}")
    if "guidance_scale" in cond:
        parts.append(f"guidance {cond['guidance_scale']:g}")
    return ", ".join(parts)


def displayable(traj, latent_channels: bool = False):
    """What the pictures show of `traj`: itself for a pixel run; for a latent run, a Trajectory with
    the same fields in which each field is its decoded frames where the run kept them (record(decode=…)
    or `decode`), else its latent channels side by side (`channels_view`); latent_channels=True shows
    the channels of every field. `meta["shown_as"]` says which is which."""
    if traj.meta.get("space") != "latent" or "shown_as" in traj.meta:     # pixels, or already a view
        return traj
    fields, shown = {}, {}
    for name in traj.fields:
        if name.endswith(DECODED_SUFFIX):
            continue
        if not latent_channels and name + DECODED_SUFFIX in traj.fields:
            fields[name], shown[name] = traj.field(name + DECODED_SUFFIX), "decoded"
        else:
            fields[name], shown[name] = channels_view(traj.field(name)), "latent channels"
    return traj.with_fields(fields, dict(traj.meta, shown_as=shown))
