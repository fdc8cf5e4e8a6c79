"""An A/B run's per-step statistics: made on the device from the loop's steps (`StepStatistics`), and
held per variant (`VariantSeries`; the final samples in memory or streamed to disk, `StreamedFinals`).

`ppddpm.analysis.ab.compare` reduces the one sampling loop (`ppddpm.core.loop`) with a
`StepStatistics` per group of seeds, and merges the groups' `VariantSeries` into its report.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from ppddpm.core.adapters import adapter_for, clipping_of
from ppddpm.core.loop import LoopStep
from ppddpm.core.transfer import chunk_for, start_copy
from ppddpm.storage.format import TrajectoryError
from ppddpm.storage.stream import read_frames


@dataclass
class VariantSeries:
    """One variant's statistics over a run, [N steps, S seeds] each (float64), and its final samples [S, …].
    The comparisons (max/mean |Δ prev_sample|, max |Δ pred_original_sample|) are against the reference
    (None for the reference itself); scale and clip_fraction are of the trajectory the variant steps on."""
    scale: np.ndarray
    clip_fraction: np.ndarray
    max_abs_prev: Optional[np.ndarray]
    mean_abs_prev: Optional[np.ndarray]
    max_abs_x0: Optional[np.ndarray]
    final: np.ndarray

    @staticmethod
    def merge(parts: List[Dict[str, "VariantSeries"]]) -> Dict[str, "VariantSeries"]:
        """Seed groups side by side: series along the seed axis, finals along the first."""
        def joined(name, key):
            arrays = [getattr(part[name], key) for part in parts]
            if isinstance(arrays[0], StreamedFinals):
                return StreamedFinals([p for streamed in arrays for p in streamed.parts])
            return None if arrays[0] is None else np.concatenate(arrays, axis=0 if key == "final" else 1)
        return {name: VariantSeries(**{key: joined(name, key) for key in VariantSeries.__dataclass_fields__})
                for name in parts[0]}


class StreamedFinals:
    """A variant's final samples [S, B, C, H, W] on disk, one .npy per seed group (`compare(finals_to=…)`),
    read when indexed: `finals[k]` (or `finals[k, …]`) reads seed k's group, `groups()` one group at a time,
    `np.asarray(finals)` all of them."""

    def __init__(self, parts):
        self.parts = list(parts)                 # (path, variant's index in the file, seeds in the group)

    def groups(self):
        for path, k, n in self.parts:
            yield self._read(path, k, n)[k]

    @staticmethod
    def _read(path, k: int, n: int) -> np.ndarray:
        """The group's file, its header checked before it is mapped: floats [variants, seeds, B, C, H, W]
        holding variant k's finals of n seeds."""
        finals = read_frames(Path(path), 6)
        if finals.shape[0] <= k or finals.shape[1] != n:
            raise TrajectoryError(f"{path} holds finals of shape {finals.shape}; expected variant {k} of {n} "
                                  f"seed(s) (compare wrote it; was it changed since?)")
        return finals

    @property
    def shape(self) -> tuple:
        return (len(self),) + self._read(*self.parts[0]).shape[2:]

    def __len__(self) -> int:
        return sum(n for _, _, n in self.parts)

    def __getitem__(self, key):
        seed, rest = (key[0], key[1:]) if isinstance(key, tuple) else (key, ())
        if not isinstance(seed, (int, np.integer)):
            return np.asarray(self)[key]
        seed = int(seed) + (len(self) if seed < 0 else 0)
        for group, (_, _, n) in zip(self.groups(), self.parts):
            if seed < n:
                return np.array(group[(seed,) + tuple(rest)])
            seed -= n
        raise IndexError(f"seed index {key!r} out of range for {len(self)} seeds")

    def __array__(self, dtype=None, copy=None):
        everything = np.concatenate([np.asarray(group) for group in self.groups()])
        return everything if dtype is None else everything.astype(dtype)



class StepStatistics:
    """Reduces the loop's steps to the report's statistics on the device, a chunk of steps at a time.

    A paddle op costs ~5–20 µs of dispatch on a CPU and a host read is a synchronisation on a GPU, so
    per step the frames the statistics need are only stacked (one op per frame shape, usually one);
    every `chunk` steps they are reduced together (a few ops per column) to rows of the table below,
    whose copy to the host starts then and is read a chunk later (as `ppddpm.core.transfer.DeviceChunks`
    does for the recorder). `chunk_for` sizes the chunk to its memory budget (one step at the least).

    Columns, per seed: for each trajectory max|x_t|, max|ε̂| and the share of x̂_0 its clipping changes
    (`Adapter.clip_fraction`, by the scheduler in force; 0 with no clipping); for each other variant
    max|Δ prev_sample|, mean|Δ prev_sample|, max|Δ pred_original_sample| against the reference (NaN at
    the steps where either returns no x̂_0). scale = max|x_t| + max|ε̂| + 1 is added on the host, in float32."""

    def __init__(self, names: List[str], sched, mode: str, n_steps: int, n_seeds: int):
        self.names, self.sched, self.n_seeds = names, sched, n_seeds
        self.drivers = names if mode == "free" else names[:1]
        self.columns = [(v, key) for v in self.drivers for key in ("max_abs_sample", "max_abs_model_output",
                                                                   "clip_fraction")] + \
                       [(v, key) for v in names[1:] for key in ("max_abs_prev", "mean_abs_prev", "max_abs_x0")]
        self.rows = np.zeros((n_steps, len(self.columns), n_seeds), np.float32)
        self.rows[:, [k for k, (_, key) in enumerate(self.columns) if key == "max_abs_x0"]] = np.nan
        self.fields: Optional[List[tuple]] = None    # (record field, variant index) a step contributes
        self.groups: List[List[int]] = []            # the fields of each frame shape, stacked together
        self.held: List[list] = []                   # per group, one stacked tensor per step of this chunk
        self.blank: Dict[int, object] = {}           # a zero frame per field that a step may leave None
        self.gaps: List[tuple] = []                  # (step, column, seed, value) to write over on the host
        self.chunk, self.done, self.added, self.in_flight, self.last = 0, 0, 0, None, None

    def add(self, step: LoopStep):
        import paddle

        if self.fields is None:
            self._layout(step.records)
        for group, held in zip(self.groups, self.held):
            held.append(paddle.stack([self._frame(step, f, s) for f in group for s in range(self.n_seeds)]))
        self.last, self.added = step, self.added + 1
        if len(self.held[0]) == self.chunk:
            self._reduce()

    def _frame(self, step: LoopStep, f: int, s: int):
        """Field f of seed s at this step; a zero frame, and its columns overwritten, where it is None."""
        name, v = self.fields[f]
        frame = getattr(step.records[v][s], name)
        if frame is not None:
            return frame
        column = {"pred_original_sample_unclipped": "clip_fraction", "pred_original_sample": "max_abs_x0"}[name]
        hit = [k for k, (c, key) in enumerate(self.columns)          # the reference's x̂_0 is in every Δ x̂_0
               if key == column and (c == self.names[v] or (v == 0 and key == "max_abs_x0"))]
        self.gaps += [(self.added, k, s, 0.0 if column == "clip_fraction" else np.nan) for k in hit]
        return self.blank[f]

    def _layout(self, records):
        """The frames a step contributes, from the first step: each trajectory's x_t and ε̂ (and x̂_0
        before clipping, where clipping is in force), every variant's prev_sample and x̂_0."""
        import paddle

        has = lambda v, name: getattr(records[v][0], name) is not None       # noqa: E731
        fields = []
        for d in range(len(self.drivers)):
            fields += [("sample", d), ("model_output", d)]
            if clipping_of(self.sched) and has(d, "pred_original_sample_unclipped"):
                fields.append(("pred_original_sample_unclipped", d))
        if len(self.names) > 1:
            fields += [("prev_sample", v) for v in range(len(self.names))]
            if has(0, "pred_original_sample"):
                fields += [("pred_original_sample", v) for v in range(len(self.names))
                           if v == 0 or has(v, "pred_original_sample")]
        frames = [getattr(records[v][0], name) for name, v in fields]
        shapes = [tuple(frame.shape) for frame in frames]
        self.fields, self.batch = fields, frames[0].shape[0]
        self.groups = [[f for f in range(len(fields)) if shapes[f] == shape] for shape in dict.fromkeys(shapes)]
        self.held = [[] for _ in self.groups]
        self.blank = {f: paddle.zeros_like(frames[f]) for f, (name, _) in enumerate(fields) if "original" in name}
        self.chunk = chunk_for(self.n_seeds * sum(int(np.prod(shape)) * 4 for shape in shapes))

    def _reduce(self):
        """The held steps' rows: computed, their host copy started; the chunk before them arrives."""
        import paddle

        k, frames = len(self.held[0]), {}
        for group, held in zip(self.groups, self.held):
            x = held[0].unsqueeze(0) if k == 1 else paddle.stack(held)
            x = x.reshape([k, len(group), self.n_seeds, -1])                  # [k, fields, S, B·C·H·W]
            frames.update({f: x[:, j] for j, f in enumerate(group)})
        self.held = [[] for _ in self.groups]
        at = {field: frames[f] for f, field in enumerate(self.fields)}      # [k, S, B·C·H·W] each
        parts = {}
        for d, v in enumerate(self.drivers):
            parts[v, "max_abs_sample"] = at["sample", d].abs().max(axis=-1)
            parts[v, "max_abs_model_output"] = at["model_output", d].abs().max(axis=-1)
            if ("pred_original_sample_unclipped", d) in at:
                raw = at["pred_original_sample_unclipped", d].reshape([k * self.n_seeds * self.batch, -1])
                parts[v, "clip_fraction"] = adapter_for(self.sched).clip_fraction(self.sched, raw, k * self.n_seeds
                                                                                  ).reshape([k, -1])
        for v, name in enumerate(self.names[1:], start=1):
            diff = (at["prev_sample", v] - at["prev_sample", 0]).abs()
            parts[name, "max_abs_prev"], parts[name, "mean_abs_prev"] = diff.max(axis=-1), diff.mean(axis=-1)
            if ("pred_original_sample", v) in at:
                parts[name, "max_abs_x0"] = (at["pred_original_sample", v] - at["pred_original_sample", 0]
                                             ).abs().max(axis=-1)
        rows = paddle.stack(list(parts.values()), axis=1)                     # [k, columns, S]
        self._arrive()
        self.in_flight = (start_copy(rows), [self.columns.index(c) for c in parts], k)

    def _arrive(self):
        """The chunk in flight, read into the host table (with the gaps of its steps)."""
        if self.in_flight is not None:
            copy, where, k = self.in_flight
            self.rows[self.done:self.done + k, where] = copy.numpy()
            self.done += k
            self.in_flight = None
            for step, column, seed, value in [g for g in self.gaps if g[0] < self.done]:
                self.rows[step, column, seed] = value
            self.gaps = [g for g in self.gaps if g[0] >= self.done]

    def series(self) -> Dict[str, VariantSeries]:
        """Each variant's VariantSeries (the rest of the rows brought over, the finals read once)."""
        import paddle

        if self.held and self.held[0]:
            self._reduce()
        self._arrive()
        finals = paddle.stack([paddle.stack([r.prev_sample for r in lane]) for lane in self.last.records]).numpy()
        column = {c: self.rows[:, k, :] for k, c in enumerate(self.columns)}
        for v in {v for v, _ in self.columns}:
            if (v, "max_abs_sample") in column:        # float32, in the order the numpy statistics added it
                column[v, "scale"] = column[v, "max_abs_sample"] + column[v, "max_abs_model_output"] + np.float32(1)
        own = lambda v, key: column.get((v, key), column.get((self.names[0], key)))  # noqa: E731  (shadow: the reference's)
        wide = lambda a: None if a is None else a.astype(np.float64)  # noqa: E731
        return {v: VariantSeries(scale=wide(own(v, "scale")), clip_fraction=wide(own(v, "clip_fraction")),
                                 max_abs_prev=wide(column.get((v, "max_abs_prev"))),
                                 mean_abs_prev=wide(column.get((v, "mean_abs_prev"))),
                                 max_abs_x0=wide(column.get((v, "max_abs_x0"))), final=finals[k])
                for k, v in enumerate(self.names)}
