"""Pictures of DDPM at work. Every function returns a matplotlib `Figure` (shown inline in a
notebook) and accepts `save=` (a PNG path). Figures are built without pyplot, so they
render headless (Agg) from scripts and the CLI.

Pictures of a recorded run read the run alone — its frames, its per-step columns (σ_t, the
call, the stage, the clipped share: `ppddpm.core.columns`) and its metadata — never paddle or
the scheduler, so a run file copied to a machine without paddle draws the same.

Images are mapped from [−1, 1] to display range exactly as `DDPMPipeline` does:
(x / 2 + 0.5) clipped to [0, 1].
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Optional

import numpy as np

from ppddpm._moved import moved_names
from ppddpm._io import atomic_path
from ppddpm.errors import BadValue, check_int
from ppddpm.model.data import load_digits, read_image
from ppddpm.pipelines.latent.display import caption, displayable
from ppddpm.storage.format import kept_steps
from ppddpm.storage.legacy import sampler_family, set_timesteps_of

EVERY_T = 50          # the grids' default spacing: the article's t = 950, 900, …, 0, whatever the steps
MAX_FIGURE_WIDTH = 16  # inches: wide tiles (a latent's channels side by side) take fewer to a row
MAX_NCOLS = 100       # tiles a row: 100 tiles of 0.9 in make a figure 90 in (9000 px) wide
MAX_AXES = 2000       # tiles in one figure, blanks of the last row included: each is a matplotlib Axes that costs
                      # ~0.05 s to draw and save here, so 2000 take minutes; the article's grid has 20, every step of a
                      # 1000-step run in plot_trajectory (x_t and x̂_0) 2000


def _check_ncols(ncols: int) -> None:
    """`ncols` (tiles a row, as asked: before a wide frame lowers it) an integer of at most MAX_NCOLS."""
    check_int("ncols", ncols)
    if ncols > MAX_NCOLS:
        raise BadValue(f"ncols must be at most {MAX_NCOLS} (tiles a row), got {ncols}")


def _check_layout(tiles: int, ncols: int, rows: int = 1) -> int:
    """`ncols` (tiles a row) checked, and the figure's tile count: `tiles` tiles, in `rows` figure rows
    each (a batch's samples, or x_t and x̂_0), at most MAX_AXES. Returns the rows of tiles per block."""
    _check_ncols(ncols)
    per = -(-tiles // ncols)
    if per * rows * ncols > MAX_AXES:
        raise BadValue(f"{tiles} tiles{f' × {rows}' if rows > 1 else ''} at {ncols} a row make a figure of "
                       f"{per * rows * ncols} tiles; one figure holds at most {MAX_AXES} (each takes a while to draw): "
                       f"choose fewer tiles (tiles, every, every_t), fewer columns, or one sample (index)")
    return per


def _figure(width, height):
    from matplotlib.figure import Figure

    _enable_notebook_display()
    return Figure(figsize=(width, height), dpi=100)


def _enable_notebook_display():
    """In IPython/Jupyter, teach the display system to draw a returned matplotlib Figure as PNG
    (what `%matplotlib inline` does). Figures made here stay out of pyplot's list, so each is
    drawn once, as the cell's value."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is None:
        return
    from matplotlib.figure import Figure

    png = shell.display_formatter.formatters["image/png"]
    if Figure not in png.type_printers:
        from IPython.core.pylabtools import print_figure

        png.for_type(Figure, lambda fig: print_figure(fig, "png", bbox_inches="tight"))


def _save(fig, save):
    if save is not None:
        with atomic_path(Path(save), suffix=".png") as tmp:
            fig.savefig(tmp, format="png", bbox_inches="tight")
    return fig


def to_display(x: np.ndarray) -> np.ndarray:
    """[C, H, W] in [−1, 1] → [H, W] (gray) or [H, W, C] in [0, 1], as the pipeline maps it."""
    x = np.clip(np.asarray(x, np.float32) / 2 + 0.5, 0, 1)
    return x[0] if x.shape[0] == 1 else x.transpose(1, 2, 0)


def _show(ax, x, title=None, fontsize=8):
    img = to_display(x)
    ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title is not None:
        ax.set_title(title, fontsize=fontsize, pad=2)


def _t(t) -> str:
    """A timestep as shown: 950, or 979.3 for the Euler-type schedulers' fractional t."""
    return f"{float(t):g}"


def select_steps(traj, every: Optional[int] = None, every_t: Optional[int] = None,
                 tiles: Optional[int] = None) -> np.ndarray:
    """Indices into `traj` of the recorded steps to show, and always the last one:
    - `every`: every `every`-th *sampling step* (a multiple of the `every` it was recorded with);
    - `every_t`: for each multiple of `every_t` in the run's range of t (950, 900, … for 50), the
      recorded step whose t is nearest — the same tiles whatever the number of sampling steps;
    - `tiles`: that many steps, evenly spaced over the recorded ones.
    With none of them, every recorded step."""
    chosen = [x is not None for x in (every, every_t, tiles)]
    if sum(chosen) > 1:
        raise BadValue("choose one of every (sampling steps), every_t (spacing in t) or tiles (how many)")
    if every_t is not None:
        check_int("every_t", every_t)
        t = np.asarray(traj.timesteps, np.float64)
        if not len(t):
            return np.arange(0)
        targets = np.arange(np.ceil(t.min() / every_t) * every_t, t.max() + 1e-9, every_t)
        keep = [int(np.argmin(np.abs(t - target))) for target in targets]
        return np.unique(keep + [len(traj) - 1]).astype(np.int64)
    if tiles is not None:
        check_int("tiles", tiles)
        return np.unique(np.linspace(0, len(traj) - 1, min(tiles, len(traj))).round().astype(np.int64))
    recorded_every = int(traj.meta.get("every", 1))
    n_steps = int(traj.meta.get("num_inference_steps", len(traj)))
    if every is None:
        return np.arange(len(traj))
    check_int("every", every)
    if every % recorded_every:
        raise BadValue(f"this trajectory was recorded every {recorded_every} steps; choose every as a "
                       f"multiple of {recorded_every}, or record with a smaller every")
    wanted = set(kept_steps(n_steps, every).tolist())
    return np.array([i for i, call in enumerate(traj.column("call")) if call in wanted], dtype=np.int64)


def _spacing(every, every_t, tiles) -> dict:
    """The grids' choice of steps: as given (one of them: `select_steps` refuses two), else every
    `EVERY_T` in t — the article's t = 950, 900, …, 0 at 1000 steps, and the same tiles when strided."""
    if every is None and every_t is None and tiles is None:
        every_t = EVERY_T
    return dict(every=every, every_t=every_t, tiles=tiles)


class _RunFacts:
    """What titles say about a recorded run, read from it: `steps` sampling steps (Heun's 10, not its
    19 step calls), `calls`, the `every` it was recorded with, whether it stopped early, whether
    tiles need stage labels (a scheduler that evaluates one t more than once: Heun, PNDM), and, where
    the samples live in σ-space (Euler-type schedulers: the run keeps `noise_level`), the σ of each
    recorded x_t and x_{t−1}, by which `shown` divides them: x/√(σ² + 1) is what the model is given
    (`scale_model_input`), on the [−1, 1] scale of the image (σ = 0 at the end: the image itself)."""

    def __init__(self, traj):
        self.traj, self.every = traj, int(traj.meta.get("every", 1))
        self.calls = int(traj.meta.get("num_inference_steps", len(traj)))
        self.steps = set_timesteps_of(traj.meta, sampler_family(traj.meta)) or self.calls
        self.staged = bool(len(traj.stages)) and any(str(s) for s in traj.stages)
        self.noise_level = {}
        if {"noise_level", "noise_level_prev"} <= set(traj.columns):
            self.noise_level = {"sample": traj.column("noise_level"), "prev_sample": traj.column("noise_level_prev")}

    def scaled(self, field) -> bool:
        """A σ-space sample, drawn as the model sees it; a latent run's frames decoded to pixels are not."""
        return field in self.noise_level and self.traj.meta.get("shown_as", {}).get(field) != "decoded"

    def shown(self, field, data, i):
        """Frame i of `field` as drawn: x/√(σ² + 1) for a σ-space sample, else as recorded."""
        return data[i] / np.sqrt(self.noise_level[field][i] ** 2 + 1) if self.scaled(field) else data[i]

    def label(self, field) -> str:
        return FIELD_LABELS.get(field, field) + ("/√(σ²+1)" if self.scaled(field) else "")

    def tile(self, i, sep="\n") -> str:
        """A tile's title: its t, and its stage where the scheduler evaluates a t more than once."""
        stage = str(self.traj.stages[i]) if self.staged else ""
        return f"t={_t(self.traj.timesteps[i])}" + (f"{sep}{stage}" if stage else "")

    def spacing(self, steps) -> str:
        """How the chosen tiles are spaced, read from their own t: "every 100 in t" only when at least
        three tiles are so (two tiles are two tiles, whatever their gap)."""
        t = np.asarray(self.traj.timesteps, np.float64)[steps]
        gaps = -np.diff(t)
        moves = gaps[gaps != 0]                 # a zero gap: one t at two stages (Heun's predictor, corrector)
        if len(moves) >= 2 and np.allclose(moves, moves[0]) and moves[0] > 0:
            return f"every {moves[0]:g} in t" + (", a t twice at two stages" if len(moves) < len(gaps) else "")
        return f"{len(steps)} tile" + ("s" if len(steps) != 1 else "")

    def run(self) -> str:
        """The run: its sampling steps (and step calls, where they differ), how it was recorded, and
        where it stopped when it did not finish."""
        calls = f", {self.calls} step calls" if self.calls != self.steps else ""
        recorded = (f"every {self.every} recorded: {len(self.traj)}" if self.every > 1 else
                    f"{len(self.traj)} recorded")
        stopped = ""
        if not self.traj.complete and "call" in self.traj.columns and len(self.traj):
            last = int(self.traj.column("call")[-1]) + 1
            stopped = f"; stopped early: its last recorded step call is {last} of {self.calls}"
        return f"{self.steps} sampling steps{calls}, {recorded}{stopped}"

    def scale_note(self, fields) -> str:
        return (" — σ-space x_t shown as x_t/√(σ²+1), the scale the model sees"
                if any(self.scaled(f) for f in fields) else "")


def _tiles(data, tile: float, ncols: int) -> tuple:
    """(width, height, columns) of the tiles of frames `data` [.., H, W]: `tile` inches high and as wide
    as the frame's shape makes them (a latent's channels side by side are 4 times wider than high), so
    fewer to a row where `ncols` of them would pass MAX_FIGURE_WIDTH (`ncols` checked by the caller)."""
    h, w = data.shape[-2:]
    width, height = tile * max(1.0, w / h), tile * max(1.0, h / w)
    return width, height, max(1, min(ncols, int(MAX_FIGURE_WIDTH // width)))


def _drawable(traj):
    """What the pictures draw of `traj`: a latent run's decoded frames where kept, else its channels
    (`displayable`); a run without a recorded step is one clear error."""
    traj.check_recorded()
    return displayable(traj)


def _samples(traj, index):
    b = traj.field(traj.fields[0]).shape[1]
    if index is None:
        return list(range(b))
    if not 0 <= index < b:
        raise BadValue(f"index must be in [0, {b}) for a batch of {b}, got {index}")
    return [index]


def _caption(traj) -> str:
    """"; prompt '…', guidance 7.5" for a latent run (`ppddpm.pipelines.latent.caption`), else ""."""
    text = caption(traj)
    return f"; {text}" if text else ""


FIELD_LABELS = {"prev_sample": "x_t", "pred_original_sample": "x̂_0", "sample": "x_t (input)",
                "model_output": "ε̂", "pred_original_sample_unclipped": "x̂_0 unclipped", "noise": "z"}


def plot_grid(traj, field: str = "prev_sample", every: Optional[int] = None, ncols: int = 10,
              index: Optional[int] = None, tile: float = 0.9, save=None, every_t: Optional[int] = None,
              tiles: Optional[int] = None):
    """The article's figure: `field` at the steps `select_steps` picks (every `every` sampling
    steps, or every `every_t` in t, or `tiles` of them; none given: every 50 in t, the article's
    t = 950, 900, …, 0 whatever the number of steps), `ncols` tiles a row, each titled with its
    t (and its stage for Heun / PNDM). A batch gives one labelled block of rows per sample (or
    only sample `index`). The title's spacing and counts are read from the tiles and the run
    (`_RunFacts`); σ-space samples are drawn at the scale the model sees."""
    _check_ncols(ncols)
    traj = _drawable(traj)
    data = traj.field(field)
    steps = select_steps(traj, **_spacing(every, every_t, tiles))
    samples = _samples(traj, index)
    width, height, ncols = _tiles(data, tile, ncols)
    rows_per = _check_layout(len(steps), ncols, len(samples))
    facts = _RunFacts(traj)
    row_height = height + (0.35 if facts.staged else 0.2)
    fig = _figure(ncols * width, rows_per * len(samples) * row_height + 0.5)
    axes = fig.subplots(rows_per * len(samples), ncols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for si, b in enumerate(samples):
        for k, i in enumerate(steps):
            ax = axes[si * rows_per + k // ncols, k % ncols]
            ax.axis("on")
            _show(ax, facts.shown(field, data, i)[b], facts.tile(i))
        if len(samples) > 1:
            first = axes[si * rows_per, 0]
            first.set_ylabel(f"sample {b}", rotation=0, labelpad=24, fontsize=9)
    fig.suptitle(f"{facts.label(field)}, t = {_t(traj.timesteps[steps[0]])} … {_t(traj.timesteps[steps[-1]])}: "
                 f"{facts.spacing(steps)} ({facts.run()})" + (f", {len(samples)} samples" if len(samples) > 1 else "")
                 + facts.scale_note([field]) + _caption(traj), fontsize=10)
    return _save(fig, save)


def plot_trajectory(traj, every: Optional[int] = None, index: int = 0, ncols: int = 10, tile: float = 0.9, save=None,
                    every_t: Optional[int] = None, tiles: Optional[int] = None):
    """x_t and x̂_0 rows aligned by step: the model's guess of the final image sharpens as the
    noise falls. Steps chosen, titled and scaled as in `plot_grid`."""
    _check_ncols(ncols)
    traj = _drawable(traj)
    steps = select_steps(traj, **_spacing(every, every_t, tiles))
    _samples(traj, index)
    facts = _RunFacts(traj)
    x_t, x_0 = traj.field("prev_sample"), traj.field("pred_original_sample")
    width, height, ncols = _tiles(x_t, tile, ncols)
    chunks = _check_layout(len(steps), ncols, rows=2)
    fig = _figure(ncols * width + 0.6, chunks * 2 * (height + (0.3 if facts.staged else 0.2)) + 0.5)
    axes = fig.subplots(chunks * 2, ncols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k, i in enumerate(steps):
        r, c = 2 * (k // ncols), k % ncols
        for row, field, data in ((r, "prev_sample", x_t), (r + 1, "pred_original_sample", x_0)):
            ax = axes[row, c]
            ax.axis("on")
            _show(ax, facts.shown(field, data, i)[index], facts.tile(i) if row == r else None)
    for chunk in range(chunks):
        axes[2 * chunk, 0].set_ylabel("x_t", rotation=0, labelpad=14, fontsize=9)
        axes[2 * chunk + 1, 0].set_ylabel("x̂_0", rotation=0, labelpad=14, fontsize=9)
    fig.suptitle(f"x_t (sample) and x̂_0 (the model's guess) by step: {facts.spacing(steps)} ({facts.run()})"
                 + facts.scale_note(["prev_sample"]) + _caption(traj), fontsize=10)
    return _save(fig, save)


def plot_ab(report, variant: Optional[str] = None, seed_index: int = 0, save=None):
    """Per-step max |Δ x_{t−1}| and |Δ x̂_0| (log axis) against the float32 rounding bound, the
    share of clipped x̂_0 values, and the final images side by side with their difference."""
    v = variant or report.others[0]
    if v not in report.others:
        raise BadValue(f"variant must be one of {report.others}, got {v!r}")
    t = report.timesteps
    fig = _figure(10, 6.8)
    grid = fig.add_gridspec(2, 3, height_ratios=[1.5, 1], hspace=0.75)
    ax = fig.add_subplot(grid[0, :])
    d_prev, d_x0 = report.max_abs_prev[v][:, seed_index], report.max_abs_x0[v][:, seed_index]
    bound = report.step_bound()[:, seed_index]
    shown = np.concatenate([d_prev, d_x0, bound])
    shown = shown[np.isfinite(shown) & (shown > 0)]
    floor = shown.min() / 10 if len(shown) else 1e-12      # exact zeros are drawn on the floor
    ax.semilogy(t, np.maximum(d_prev, floor), label="max |Δ x_{t−1}|", lw=1.2)
    ax.semilogy(t, np.maximum(d_x0, floor), label="max |Δ x̂_0|", lw=1.0, alpha=0.8)
    ax.semilogy(t, bound, "k--", lw=0.8, label="float32 rounding bound")
    ax.set_ylim(bottom=floor / 2)
    ax.set_xlim(t.max(), t.min())
    ax.set_xlabel("t (sampling runs right →)")
    ax.set_ylabel("|Δ| vs " + report.reference + " (0 drawn at the floor)")
    ax2 = ax.twinx()
    ax2.fill_between(t, report.clip_fraction[report.reference][:, seed_index], step="mid", color="tab:red",
                     alpha=0.15, label="x̂_0 values clipped")
    ax2.set_ylim(0, 1)
    ax2.set_ylabel("fraction of x̂_0 clipped", color="tab:red")
    lines = ax.get_legend_handles_labels()
    extra = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + extra[0], lines[1] + extra[1], fontsize=8, loc="upper center", ncol=4,
              bbox_to_anchor=(0.5, -0.2), frameon=False)          # below the axes: no curve hidden
    runs_on = report.meta.get("variants", {})
    on = lambda name: f"{name} [{runs_on[name]['scheduler']}]" if name in runs_on else name  # noqa: E731
    ax.set_title(f"{on(v)} vs {on(report.reference)} ({report.mode}, {report.num_inference_steps} steps, "
                 f"clip_sample={report.clip_sample}, seed {report.seeds[seed_index]})", fontsize=10)
    a, b = report.final[report.reference][seed_index, 0], report.final[v][seed_index, 0]
    _show(fig.add_subplot(grid[1, 0]), a, f"final: {report.reference}", fontsize=9)
    _show(fig.add_subplot(grid[1, 1]), b, f"final: {v}", fontsize=9)
    _difference(fig.add_subplot(grid[1, 2]), a, b)
    return _save(fig, save)


def _difference(ax, a, b):
    """|a − b| per pixel (the largest over channels: the table's final max|Δ|) with its colour scale, or,
    where a and b are equal, the word: a flat colour under a ±0.1 scale would suggest a difference."""
    diff = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max(axis=0)
    ax.set_xticks([])
    ax.set_yticks([])
    if not diff.max() > 0:
        ax.text(0.5, 0.5, "identical", ha="center", va="center", fontsize=11, transform=ax.transAxes)
        ax.set_title("|Δ| in [−1, 1] units: 0 at every pixel", fontsize=9)
        return
    im = ax.imshow(diff, cmap="magma", vmin=0, interpolation="nearest")
    ax.set_title(f"|Δ| in [−1, 1] units (max {diff.max():.2g})", fontsize=9)
    ax.figure.colorbar(im, ax=ax, fraction=0.046)


def plot_losses(runs: dict, smooth: int = 25, save=None):
    """Training losses (MSE on ε, eq. 14) on a log axis: `{label: per-step losses}`, each drawn
    as is and, when long enough, as a `smooth`-step running mean."""
    fig = _figure(9, 3)
    ax = fig.add_subplot(1, 1, 1)
    for label, losses in runs.items():
        losses = np.asarray(losses, np.float64)
        if len(losses) > 2 * smooth:
            line, = ax.semilogy(losses, lw=0.4, alpha=0.35)
            ax.semilogy(np.arange(smooth - 1, len(losses)), np.convolve(losses, np.ones(smooth) / smooth, "valid"),
                        color=line.get_color(), label=f"{label} ({smooth}-step mean)")
        else:
            ax.semilogy(losses, label=label)
    ax.set_xlabel("optimisation step")
    ax.set_ylabel("MSE on ε, eq. (14)")
    ax.legend(fontsize=8)
    return _save(fig, save)


TILE_PX = 48      # contact sheets upscale small images to about this many pixels a side, for display only


def contact_sheet(images: np.ndarray, ncols: int = 16, scale: int = None, gap: int = 2, save=None):
    """[N, C, H, W] in [−1, 1] → one PIL image: tiles upscaled ×`scale` (nearest: the pixels stay
    pixels; default: to about TILE_PX, so 8x8 digits ×6, 16x16 ×3, 64x64 and up ×1), `gap` white
    pixels between them so neighbouring digits never run together."""
    from PIL import Image

    x = np.stack([to_display(im) for im in np.asarray(images, np.float32)])   # [N, H, W] or [N, H, W, 3], [0, 1]
    n, h, w = x.shape[:3]
    scale = max(1, TILE_PX // max(h, w)) if scale is None else scale
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    th, tw = h * scale, w * scale
    sheet = np.ones((nrows * (th + gap) + gap, ncols * (tw + gap) + gap) + x.shape[3:], np.float32)
    for i in range(n):
        r, c = divmod(i, ncols)
        tile = np.repeat(np.repeat(x[i], scale, axis=0), scale, axis=1)
        sheet[gap + r * (th + gap): gap + r * (th + gap) + th, gap + c * (tw + gap): gap + c * (tw + gap) + tw] = tile
    image = Image.fromarray((sheet * 255).round().astype(np.uint8))
    if save is not None:
        with atomic_path(Path(save), suffix=Path(save).suffix) as tmp:
            image.save(tmp, format="PNG")
    return image


def clip_map(source) -> tuple:
    """(timesteps [N], share [N, S]): the share of x̂_0's values the step's clipping or thresholding
    changed, per step and per sample, as the step computed it — a Trajectory's `clip_fraction` (files of
    ppddpm 0.1–0.4 kept the batch's share only: one row), or an ABReport's (per seed, on the reference's
    trajectory)."""
    if hasattr(source, "clip_fraction") and isinstance(source.clip_fraction, dict):       # an ABReport
        return source.timesteps, source.clip_fraction[source.reference]
    share = np.asarray(source.clip_fraction, np.float64)
    return source.timesteps, share if share.ndim == 2 else share[:, None]


def plot_clip_map(source, title: Optional[str] = None, save=None):
    """Where clipping of x̂_0 fires: a map of step × sample, coloured by the share of x̂_0's values
    the step's clipping (or dynamic thresholding) changed, measured before it (0: the step used eq.
    15's x̂_0 as it was)."""
    t, share = clip_map(source)
    fig = _figure(8, 2.2 + 0.12 * share.shape[1])
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(share.T, aspect="auto", cmap="Reds", vmin=0, vmax=max(float(share.max()), 1e-6),
                   interpolation="nearest", extent=(-0.5, len(t) - 0.5, share.shape[1] - 0.5, -0.5))
    ticks = np.unique(np.linspace(0, len(t) - 1, min(len(t), 11)).round().astype(int))
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{t[i]:g}" for i in ticks], fontsize=8)
    ax.set_xlabel("t (sampling runs right →)")
    per_sample = hasattr(source, "seeds") or share.shape[1] == source.field(source.fields[0]).shape[1]
    ax.set_ylabel(("seed" if hasattr(source, "seeds") else "sample") if per_sample else "batch (one share)")
    if hasattr(source, "seeds") and len(source.seeds) <= 16:
        ax.set_yticks(range(len(source.seeds)))
        ax.set_yticklabels(source.seeds, fontsize=7)
    fired = (share > 0).any(axis=1)
    ax.set_title(title or f"clipping of x̂_0 fired at {int(fired.sum())} of {len(t)} steps "
                          f"(share of values outside the range, max {share.max():.1%})", fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.03, label="share clipped")
    return _save(fig, save)


def load_image(image, resolution: Optional[int] = None, channels: Optional[int] = None) -> np.ndarray:
    """"digit" (the first held-out scikit-learn digit), "digitN" (the first held-out digit N, 0–9),
    a path, a PIL image or an array → [C, H, W] in [−1, 1]."""
    from PIL import Image

    if isinstance(image, str) and image.startswith("digit"):
        label = image[5:]
        if label not in ("",) + tuple("0123456789"):
            raise BadValue(f"image {image!r}: use 'digit' or 'digit0' … 'digit9' (the first held-out digit of "
                           f"that class), or the path of an image file")
        digits, labels = load_digits("test", resolution or 16, with_labels=True)
        return digits[0] if label == "" else digits[int(np.nonzero(labels == int(label))[0][0])]
    if isinstance(image, (str, Path)):
        image = read_image(image)               # "no image at …", a FIFO, an unreadable or a too large image: one line
    if isinstance(image, Image.Image):
        image = image.convert("L" if channels == 1 else "RGB")
        if resolution:
            image = image.resize((resolution, resolution), Image.BICUBIC)
        a = np.asarray(image, np.float32) / 127.5 - 1
        return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
    a = np.asarray(image, np.float32)
    if a.ndim != 3:
        raise BadValue(f"an image array must be [C, H, W] in [-1, 1], got shape {a.shape}")
    return a


def plot_forward(image, scheduler, every: int = 50, ncols: int = 10, seed: int = 0, tile: float = 0.9, save=None):
    """The forward process q(x_t | x_0) on a real image, every `every` steps up to T, by the
    closed form eq. (4) `scheduler.add_noise` with one fixed ε, so the tiles differ only by t."""
    import paddle

    x0 = load_image(image)
    check_int("every", every)
    T = scheduler.config.num_train_timesteps
    ts = list(range(0, T, every)) + ([T - 1] if (T - 1) % every else [])
    rows = _check_layout(len(ts), ncols)
    eps = np.random.RandomState(seed).randn(*x0.shape).astype(np.float32)
    xs = scheduler.add_noise(paddle.to_tensor(np.repeat(x0[None], len(ts), 0)),
                             paddle.to_tensor(np.repeat(eps[None], len(ts), 0)),
                             paddle.to_tensor(ts, dtype="int64")).numpy()         # eq. (4)
    fig = _figure(ncols * tile, rows * (tile + 0.2) + 0.4)
    axes = fig.subplots(rows, ncols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k, (t, x) in enumerate(zip(ts, xs)):
        ax = axes[k // ncols, k % ncols]
        ax.axis("on")
        _show(ax, x, f"t={t}")
    fig.suptitle(f"forward process q(x_t | x_0) = N(√ᾱ_t x_0, (1−ᾱ_t) I), eq. (4), every {every} steps",
                 fontsize=10)
    return _save(fig, save)


def plot_schedule(scheduler, save=None):
    """β_t, ᾱ_t, SNR_t = ᾱ_t / (1 − ᾱ_t), and the two posterior-mean coefficients of eq. (7)."""
    betas = scheduler.betas.numpy().astype(np.float64)
    ab = np.cumprod(1 - betas)
    ab_prev = np.concatenate([[1.0], ab[:-1]])
    t = np.arange(len(betas))
    coef_x0 = np.sqrt(ab_prev) * betas / (1 - ab)
    coef_xt = np.sqrt(1 - betas) * (1 - ab_prev) / (1 - ab)
    fig = _figure(10, 6.5)
    axes = fig.subplots(2, 2)
    axes[0, 0].plot(t, betas)
    axes[0, 0].set_title("β_t", fontsize=10)
    axes[0, 1].plot(t, ab, label="ᾱ_t")
    axes[0, 1].plot(t, np.sqrt(ab), label="√ᾱ_t (signal)")
    axes[0, 1].plot(t, np.sqrt(1 - ab), label="√(1−ᾱ_t) (noise)")
    axes[0, 1].legend(fontsize=8)
    axes[0, 1].set_title("ᾱ_t = ∏ (1 − β_s)", fontsize=10)
    axes[1, 0].semilogy(t, ab / (1 - ab))
    axes[1, 0].set_title("SNR_t = ᾱ_t / (1 − ᾱ_t)", fontsize=10)
    axes[1, 1].semilogy(t, coef_x0, label="x_0 coeff √ᾱ_{t−1} β_t / (1−ᾱ_t)")
    axes[1, 1].semilogy(t, coef_xt, label="x_t coeff √α_t (1−ᾱ_{t−1}) / (1−ᾱ_t)")
    axes[1, 1].legend(fontsize=8)
    axes[1, 1].set_title("posterior mean coefficients, eq. (7)", fontsize=10)
    for ax in axes.flat:
        ax.set_xlabel("t")
        ax.grid(alpha=0.3)
    fig.suptitle(f"noise schedule: {scheduler.config.beta_schedule}, T={len(betas)}", fontsize=11)
    fig.tight_layout()
    return _save(fig, save)


MAX_FRAMES = 100      # an animation's default length: 10 s at 10 fps, however long the run
FRAME_LIMIT = 5000    # frames one animation may hold: each is a ~55 KB image at 128 px, held ~3 times over while the
                      # MP4 is written (~0.8 GB at the limit); a 4000-step run (improved DDPM's T) at every=1 fits
MAX_FPS = 60.0        # GIF players floor a frame at 20 ms (50 fps) and screens refresh at 60 Hz: more is not seen
MAX_HOLD = 60.0       # seconds the final image stays; the MP4 repeats it hold × fps times (≤ 3600 frames here)


def frame_steps(n: int, every: Optional[int] = None) -> list:
    """Indices of the recorded steps an animation shows: every `every`-th and the last; by
    default (None) the smallest `every` that keeps it to MAX_FRAMES frames spread over the run."""
    if every is None:
        every = max(1, -(-(n - 1) // (MAX_FRAMES - 1)))
    check_int("every", every)
    return sorted(set(range(0, n, every)) | ({n - 1} if n else set()))


def frames(traj, field: str = "prev_sample", index: int = 0, size: int = 128, steps=None):
    """PIL frames of one sample's trajectory (the recorded steps `steps`, default all), upscaled
    to `size` px, each with its field, t and stage written on it (scaled as in `plot_grid`)."""
    from PIL import Image, ImageDraw

    traj = _drawable(traj)
    data = traj.field(field)
    _samples(traj, index)
    facts = _RunFacts(traj)
    out = []
    for i in range(len(traj)) if steps is None else steps:
        img = (to_display(facts.shown(field, data, i)[index]) * 255).round().astype(np.uint8)
        pil = Image.fromarray(img).convert("RGB").resize((size, size), Image.NEAREST)
        canvas = Image.new("RGB", (size, size + 16), "white")
        canvas.paste(pil, (0, 16))
        ImageDraw.Draw(canvas).text((3, 2), f"{facts.label(field)}  {facts.tile(i, sep=' ')}", fill="black")
        out.append(canvas)
    return out


def animate(traj, path, field: str = "prev_sample", index: int = 0, size: int = 128, mp4: bool = True,
            fps: float = 10, every: Optional[int] = None, hold: float = 2.0) -> list:
    """The trajectory as an animated GIF — every `every`-th recorded step (and the last; by default
    at most MAX_FRAMES frames spread over the run, `every=1` for all) at `fps` frames a second, the
    final image held for `hold` seconds before it loops — and an MP4 beside it when OpenCV is
    installed (`write_mp4`). Returns the paths written. (ppdiffusers' `export_to_gif` fixes
    100 ms a frame, so the GIF is written with PIL directly.)"""
    path = Path(path)
    if path.suffix != ".gif":
        raise BadValue(f"animate writes a .gif, got {path.name!r}")
    if every is not None:
        check_int("every", every)
    if not (isinstance(fps, (int, float)) and 0.01 <= fps <= MAX_FPS) or \
            not (isinstance(hold, (int, float)) and 0 <= hold <= MAX_HOLD):
        raise BadValue(f"fps must be in [0.01, {MAX_FPS:g}] (more is not seen) and hold in [0, {MAX_HOLD:g}] seconds "
                       f"(the MP4 repeats the last frame hold × fps times), got fps={fps!r}, hold={hold!r}")
    traj.check_recorded()
    steps = frame_steps(len(traj), every)
    if len(steps) > FRAME_LIMIT:
        raise BadValue(f"every={every} makes {len(steps)} frames of the {len(traj)} recorded steps; an animation "
                       f"holds at most {FRAME_LIMIT} (every frame is kept in memory): choose every ≥ "
                       f"{-(-len(traj) // FRAME_LIMIT)}")
    pics = frames(traj, field, index, size, steps=steps)
    frame_ms = max(20, int(round(1000 / fps)))              # GIF players floor shorter frames
    durations = [frame_ms] * (len(pics) - 1) + [max(frame_ms, int(round(1000 * hold)))]
    written = []
    with atomic_path(path, suffix=".gif") as tmp:
        pics[0].save(str(tmp), format="GIF", save_all=True, append_images=pics[1:], optimize=False,
                     duration=durations, loop=0)
    written.append(path)
    if mp4 and importlib.util.find_spec("cv2") is not None:
        video = path.with_suffix(".mp4")
        with atomic_path(video, suffix=".mp4") as tmp:
            write_mp4([np.asarray(p) for p in pics] + [np.asarray(pics[-1])] * int(round(hold * fps)), tmp,
                      fps=int(round(fps)))
        written.append(video)
    return written


def write_mp4(frames: list, path, fps: int):
    """RGB frames [H, W, 3] uint8 as an MP4 (OpenCV's mp4v codec), as ppdiffusers' `export_to_video`
    writes them — without importing ppdiffusers, so a run file animates where paddle is not installed."""
    import cv2  # lazy: OpenCV is optional, and loads native libraries

    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), max(1, fps), (width, height))
    try:
        for frame in frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()


# 0.3 names that live elsewhere now (ppddpm/_moved.py): answered with a DeprecationWarning
__getattr__ = moved_names(__name__)
