"""The per-step columns of a recording: what each number kept beside the frames is, and who computes it.

A recorded step call carries a small record of named numbers — its t, which call it was, its stage,
whether x_{t−1} was finite, the share of x̂_0 its clipping changed, the std of the noise it added, and
ᾱ_t, ᾱ_prev (variance-preserving samplers) or σ_t, σ_prev (σ-space samplers). Each is a `Column`
here, and travels by its name from the step to the file: the recorder (`ppddpm.core.recorder`),
the device → host transfer (`ppddpm.core.transfer`), the writer and both file formats
(`ppddpm.storage`) and `Trajectory.column(name)` move whatever named columns a run has.

Who computes a column:
- `of(record)`: read off each recorded `StepRecord` on the device (a number or a 0-d tensor; one
  value per sample of the batch, [B], for a `per_sample` column). Adding such a column is this one
  line — `register_column(Column("max_abs_x0", "…", of=lambda rec: rec.pred_original_sample.abs().max()))`
  — and it is in every run recorded after, and in its files;
- else the sampler's adapter (`ppddpm.core.adapters.Adapter.numbers`), once the step's t is on the
  host: a family fills the columns its `columns` lists.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional

from ppddpm.core.adapters import adapter_for
from ppddpm.errors import BadValue
from ppddpm.storage.format import known_field


@dataclass(frozen=True)
class Column:
    name: str                          # the column's name in StepRecord's vocabulary, the files and Trajectory
    doc: str                           # what it is (with its equation, MATH.md)
    of: Optional[Callable] = None      # StepRecord → its value, on the device; None: the adapter computes it
    per_sample: bool = False           # one value per sample of the batch ([N, B]), not per step ([N])


def finite(x):
    """Whether `x` holds no NaN/Inf: a 0-d bool device tensor (no host read)."""
    import paddle

    return paddle.isfinite(x).all()


def _clip_fraction(rec):
    """The share of each sample's x̂_0 values the step's clipping or thresholding changes, as the
    step's adapter computes it (`Adapter.clip_fraction`); 0 where x̂_0 before clipping is not known."""
    batch = rec.prev_sample.shape[0]
    return adapter_for(rec.scheduler).clip_fraction(rec.scheduler, rec.pred_original_sample_unclipped, batch)


_BUILTIN = (
    Column("timesteps", "t, the timestep the step was given", of=lambda rec: rec.t),
    Column("call", "which step call of the run this is (0-based; Heun and PNDM call the step more than once "
                   "per timestep)", of=lambda rec: rec.i),
    Column("stages", "the call's stage: \"\", or \"predictor\"/\"corrector\" (Heun, KDPM2), \"prk1\"…\"plms\" "
                     "(PNDM)", of=lambda rec: rec.stage),
    Column("finite", "1 when x_{t−1} holds no NaN/Inf, else 0", of=lambda rec: finite(rec.prev_sample)),
    Column("clip_fraction", "share of each sample's x̂_0 values that the step's clip_sample or dynamic "
                            "thresholding changes, measured on x̂_0 before it", of=_clip_fraction, per_sample=True),
    Column("noise_std", "std of the noise the step added: σ_t of Algorithm 2 (DDPM), σ_t(η) of eq. (16) "
                        "(DDIM), σ_up of the ancestral samplers; 0 for a step that adds none"),
    Column("alpha_bar", "ᾱ_t of the step's input x_t (variance-preserving samplers: DDPM, DDIM, PNDM, "
                        "DPM-Solver, UniPC, DEIS, LCM)"),
    Column("alpha_bar_prev", "ᾱ of the x_{t−1} the step makes (1 past the end of the chain)"),
    Column("noise_level", "σ_t = √((1−ᾱ_t)/ᾱ_t) of the step's input x_t (σ-space samplers: Euler, Heun, LMS, "
                          "KDPM2, …; the model sees x_t/√(σ_t² + 1))"),
    Column("noise_level_prev", "σ of the x_{t−1} the step makes (0 at the end: the image itself)"),
)
COLUMNS: Dict[str, Column] = {column.name: column for column in _BUILTIN}


def register_column(column: Column) -> Column:
    """Add a per-step column (read off each recorded step by `column.of`) to every run recorded from now
    on; its name must be new and not a field's."""
    if not isinstance(column, Column) or column.of is None or not callable(column.of):
        raise BadValue("register_column takes a Column with of= (StepRecord → a number or a 0-d tensor)")
    if not column.name.isidentifier() or column.name in COLUMNS or known_field(column.name):
        raise BadValue(f"a column needs a new name (an identifier, not a field's); {column.name!r} is taken or "
                       f"not one (columns: {', '.join(COLUMNS)})")
    COLUMNS[column.name] = column
    return column


def unregister_column(name: str):
    """Remove a column `register_column` added (the built-in ones stay)."""
    if name in {column.name for column in _BUILTIN}:
        raise BadValue(f"{name!r} is a built-in column")
    COLUMNS.pop(name, None)


def run_columns(adapter_columns) -> tuple:
    """The columns a run of a sampler whose adapter fills `adapter_columns` keeps, in the registry's order:
    every column read off the step record, and the adapter's."""
    return tuple(name for name, column in COLUMNS.items() if column.of is not None or name in adapter_columns)
