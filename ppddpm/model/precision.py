"""Low precision in training, measured where it can be (the article: an MSE loss "too small" may make a model
"converge, then diverge" in low-precision training).

`autocast(precision)` is paddle.amp's mixed precision (O1) for "bfloat16" / "float16", nothing for
"float32"; `grad_scaler(precision)` paddle's `GradScaler` for float16 on a device where paddle enables it
(GPU, XPU, custom devices; on a CPU paddle switches it off itself). On a CPU paddle's auto_cast leaves the
UNet in float32: `precision_note` says so in one line instead of pretending.

On every device, `UnderflowRecord` measures per logged step what a cast to float16 or bfloat16 would do to
the gradient entries and to the loss's values (the per-element terms it averages), with and without loss
scaling by S: the share that would round to zero, the share that would become subnormal (losing bits of
precision), and the share that would overflow to ±inf. IEEE 754 round-to-nearest-even gives the thresholds
for a float32 value x ≠ 0, with m the format's smallest subnormal, n its smallest normal, M its largest finite:
zero ⇔ |x| ≤ m/2;  subnormal ⇔ m/2 < |x| < n − m/2;  overflow ⇔ |x| ≥ M + ulp(M)/2.
"""
from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass, field
from typing import Optional

from ppddpm.core.transfer import to_host

PRECISIONS = ("float32", "bfloat16", "float16")
NOMINAL_SCALE = 2.0 ** 16        # paddle.amp.GradScaler's default init_loss_scaling, where no scaler runs
# (smallest subnormal m, smallest normal n, largest finite M, ulp of M) of each 16-bit format
FORMATS = {"float16": (2.0 ** -24, 2.0 ** -14, 65504.0, 32.0),
           "bfloat16": (2.0 ** -133, 2.0 ** -126, (2.0 - 2.0 ** -7) * 2.0 ** 127, 2.0 ** 120)}
KINDS = ("zero", "subnormal", "overflow")


def thresholds(fmt: str):
    """(zero at or below, subnormal below, overflow at or above) for |x| cast to `fmt` (module docstring)."""
    m, n, big, ulp = FORMATS[fmt]
    return m / 2.0, n - m / 2.0, big + ulp / 2.0


@contextlib.contextmanager
def autocast(precision: str):
    """paddle.amp.auto_cast (O1) in `precision`, or nothing for float32. paddle's own warning that auto_cast has no
    effect on a CPU is silenced: `precision_note` says it once, in ppddpm's words."""
    import paddle

    if precision == "float32":
        yield
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="amp_guard can only be enabled")
        with paddle.amp.auto_cast(enable=True, dtype=precision, level="O1"):
            yield


def grad_scaler(precision: str):
    """paddle.amp.GradScaler for float16 where paddle runs one (not on a CPU: there it disables itself)."""
    import paddle

    if precision != "float16" or paddle.device.get_device() == "cpu":
        return None
    return paddle.amp.GradScaler(init_loss_scaling=NOMINAL_SCALE)


def precision_note(precision: str, output_dtype) -> Optional[str]:
    """One line when auto_cast in `precision` left the UNet's output in float32 (paddle on a CPU), else None."""
    import paddle

    if precision == "float32" or output_dtype != paddle.float32:
        return None
    return (f"note: --precision {precision}: paddle's auto_cast computes float32 on this device "
            f"({paddle.device.get_device()}), so this run trains in float32; train_losses.json still records what "
            f"float16 and bfloat16 would flush to zero, make subnormal or overflow")


def shares_on_device(values, scale: float) -> list:
    """0-d float32 tensors: for each format, kind and (unscaled, × scale) the share of `values`' entries
    (any shape) that a cast would change that way; order: FORMATS × KINDS × (1, scale)."""
    import paddle

    a = paddle.abs(values.astype("float32").reshape([-1]))
    nonzero, out = a > 0, []
    for fmt in FORMATS:
        zero_at, sub_below, over_at = thresholds(fmt)
        for s in (1.0, scale):
            x = a * s if s != 1.0 else a
            masks = {"zero": (x <= zero_at) & nonzero, "subnormal": (x > zero_at) & (x < sub_below),
                     "overflow": x >= over_at}
            out += [masks[k].astype("float32").mean() for k in KINDS]
    return out


@dataclass
class UnderflowRecord:
    """Per logged step, `shares_on_device` of the gradient entries and of the loss's values, read in one host
    read; `as_dict()` is what train_losses.json keeps ("underflow")."""
    every: int
    scale: float = NOMINAL_SCALE
    scale_kind: str = "nominal (paddle.amp.GradScaler's default; no scaler runs in this precision or on this device)"
    steps: list = field(default_factory=list)
    rows: list = field(default_factory=list)      # per step: gradient shares then loss shares (`shares_on_device`)

    def add(self, step: int, gradients, loss_values, scale: Optional[float] = None) -> None:
        """Record `step`: `gradients` a flat float32 tensor of the true (unscaled) gradient entries."""
        s = self.scale if scale is None else scale
        self.steps.append(int(step))
        shares = shares_on_device(gradients, s) + shares_on_device(loss_values, s)
        (host,) = to_host([{k: v for k, v in enumerate(shares)}])      # one host read for the step's shares
        self.rows.append([host[k] for k in range(len(shares))])

    def trimmed(self, before: int) -> "UnderflowRecord":
        """The steps before `before` (a resume continues from its checkpoint's step)."""
        keep = [k for k, s in enumerate(self.steps) if s < before]
        return UnderflowRecord(self.every, self.scale, self.scale_kind, [self.steps[k] for k in keep],
                               [self.rows[k] for k in keep])

    def as_dict(self) -> dict:
        n = len(FORMATS) * len(KINDS) * 2
        out = {"every": self.every, "scale": self.scale, "scale_kind": self.scale_kind, "steps": self.steps}
        for part, offset in (("gradients", 0), ("loss_values", n)):
            out[part] = {}
            k = offset
            for fmt in FORMATS:
                out[part][fmt] = {}
                for suffix in ("", "_scaled"):
                    for kind in KINDS:
                        out[part][fmt][kind + suffix] = [row[k] for row in self.rows]
                        k += 1
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "UnderflowRecord":
        rec = cls(int(data["every"]), float(data["scale"]), str(data["scale_kind"]), list(data["steps"]))
        columns = [data[part][fmt][kind + suffix] for part in ("gradients", "loss_values") for fmt in FORMATS
                   for suffix in ("", "_scaled") for kind in KINDS]
        rec.rows = [list(r) for r in zip(*columns)] if rec.steps else []
        return rec
