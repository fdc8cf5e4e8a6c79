"""One seed's run recorded to a single `.npz`, streamed to disk while it runs.

    run = sample_to_file(pipe, "runs/trajectory_seed7.npz", seed=7, num_inference_steps=50)
    run.path, run.final, len(run), run.meta, run.images

While the pipeline runs, every recorded step is appended to a stream folder next to the file
(`runs/trajectory_seed7/`, `store="disk"` of `ppddpm.record`): a run stopped by
Ctrl-C, SIGTERM or a crash keeps the steps done there (`Trajectory.load(folder)` reads them), and
the interrupt goes on to the caller. A finished run becomes the `.npz` and its stream is removed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ppddpm._io import discard
from ppddpm.pipelines.recording import sample_trajectory


@dataclass
class SampledRun:
    """A finished run written to `path`: its last x_{t−1} (`final`, [B, C, H, W] float32: the samples,
    or a latent pipeline's latents), the pipeline's own output images, and the trajectory's metadata."""
    path: Path
    final: np.ndarray
    steps_recorded: int
    meta: dict = field(default_factory=dict)
    images: list = None

    def __len__(self):
        return self.steps_recorded


def stream_folder(path) -> Path:
    """Where the run of `path` (…/name.npz) streams while it runs: …/name/."""
    return Path(path).with_suffix("")


def sample_to_file(pipe, path, seed: int = 777, **sample_kwargs) -> SampledRun:
    """`sample_trajectory(pipe, seed=seed, **sample_kwargs)` streamed to `stream_folder(path)` and
    saved (atomically) as the `.npz` at `path`; the stream is removed once the file is written.
    The final frame is taken from the run before its stream goes (no second read of the file)."""
    stream = stream_folder(path)
    traj = sample_trajectory(pipe, seed=seed, store="disk", path=stream, **sample_kwargs)
    final = np.array(traj.prev_sample[-1], np.float32)                 # a copy: the stream's memmap goes below
    run = SampledRun(traj.save(path), final, len(traj), dict(traj.meta), traj.images)
    discard(stream)                  # renamed away, then deleted: killed here, the stream is whole or gone
    return run
