"""The metadata of a trajectory file: one schema of the fields its readers use, checked once on load.

A file's metadata is JSON that anyone can edit, and `view`, `verify`, `grid` and `decode` read its
fields as numbers, names and tables (`int(meta["num_inference_steps"])`, `scheduler_config` as the
config a float64 reference builds its β / ᾱ tables from, `conditioning` for a page's title). Both
file readers (`ppddpm.storage.npz`, `ppddpm.storage.stream`) hand the decoded JSON to `check_meta`,
so a field of the wrong type, or a value out of its range, is refused in one line naming the field
and what it accepts — before any reader uses it. Fields the schema does not name (a user's own
`record(meta=...)`) pass as they are; a field it names may be absent (files of ppddpm 0.1 lack most).

Ranges are those of real runs, wide enough for any run ppdiffusers makes and narrow enough that no
reader allocates without bound: `num_train_timesteps` ≤ MAX_TRAIN_TIMESTEPS (a reference builds
several float64 tables of T numbers: 2·10⁸ of them run out of memory), ≤ MAX_STEP_CALLS step calls.
"""
from __future__ import annotations

import math
import re
from typing import Callable, NamedTuple, Optional

from ppddpm.storage.format import DTYPES, STORES, TrajectoryError, known_field

# DDPM's T is 1000 (Stable Diffusion's too); the same cap as `ppddpm.model.loading`'s for model folders
MAX_TRAIN_TIMESTEPS = 100_000
# step calls of one run: n ≤ T timesteps, two calls per timestep but the last for Heun / KDPM2 / DPM-Solver-SDE,
# n plus a 12-call warm-up for PNDM
MAX_STEP_CALLS = 2 * MAX_TRAIN_TIMESTEPS + 12
MAX_COUNT = 2 ** 62            # every, seeds, batch sizes: numpy's int64 arithmetic stays exact below this
SHOWN = 60                     # characters of a refused value quoted in the message
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,99}")


class Rule(NamedTuple):
    """`ok(value)` says whether a value is accepted; `accepted` says what is, for the one-line error."""
    ok: Callable[[object], bool]
    accepted: str
    inner: Optional[dict] = None          # a table's own fields: {name: Rule}, checked one by one


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def integer(low: int, high: int) -> Rule:
    span = f"an integer from {low} to {high}" if high < MAX_COUNT else f"an integer ≥ {low}"
    return Rule(lambda v: _is_int(v) and low <= v <= high, span)


def number(low: float = -math.inf, high: float = math.inf, finite: bool = True) -> Rule:
    """A JSON number (not a bool) in [low, high]; NaN never, ±inf only where `finite` is False."""
    def ok(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v) and \
            (not finite or math.isfinite(v)) and low <= v <= high
    span = "a finite number" if finite else "a number (not NaN)"
    if low > -math.inf or high < math.inf:
        span += f" from {low:g} to {high:g}"
    return Rule(ok, span)


BOOLEAN = Rule(lambda v: isinstance(v, bool), "true or false")
NULL = Rule(lambda v: v is None, "null")


def text(choices: Optional[tuple] = None, max_length: int = 1000) -> Rule:
    if choices is not None:
        return Rule(lambda v: isinstance(v, str) and v in choices, "one of " + ", ".join(map(repr, choices)))
    return Rule(lambda v: isinstance(v, str) and len(v) <= max_length, f"a string of at most {max_length} characters")


NAME = Rule(lambda v: isinstance(v, str) and IDENTIFIER.fullmatch(v) is not None,
            "a class or attribute name (letters, digits, _; at most 100 characters)")


def one_of(*rules: Rule) -> Rule:
    """Any of `rules`; a table among them keeps its fields' rules (checked where the value is that table)."""
    return Rule(lambda v: any(r.ok(v) for r in rules), " or ".join(r.accepted for r in rules),
                next((r.inner for r in rules if r.inner), None))


def optional(rule: Rule) -> Rule:
    return one_of(NULL, rule)


def list_of(rule: Rule, max_length: int = MAX_TRAIN_TIMESTEPS, length: Optional[int] = None,
            min_length: int = 0) -> Rule:
    def ok(v):
        return isinstance(v, list) and min_length <= len(v) <= max_length and (length is None or len(v) == length) \
            and all(rule.ok(x) for x in v)
    size = f"{length}" if length is not None else f"{min_length} to {max_length}" if min_length else \
        f"at most {max_length}"
    return Rule(ok, f"a list of {size} items, each {rule.accepted}")


def table(fields: Optional[dict] = None, values: Optional[Rule] = None) -> Rule:
    """A JSON object: its named `fields` each by its own rule; every other value by `values` (any if None)."""
    def ok(v):
        return isinstance(v, dict) and (values is None or all(values.ok(x) for k, x in v.items()
                                                              if k not in (fields or {})))
    what = "an object" + (f" whose values are each {values.accepted}" if values is not None else "")
    return Rule(ok, what, fields or {})


LIMIT_STEPS = integer(1, MAX_TRAIN_TIMESTEPS)
SCALAR = one_of(NULL, BOOLEAN, number(finite=False), text())      # a step argument: η, s_churn, s_tmax = inf, …
TEXTS = one_of(text(), list_of(text(), 10_000))

# the scheduler config keys the float64 references and the pictures read (ppddpm.reference, view)
SCHEDULER_CONFIG = {
    "num_train_timesteps": LIMIT_STEPS,
    "beta_start": number(0.0, 1.0), "beta_end": number(0.0, 1.0), "beta_schedule": text(max_length=100),
    "trained_betas": optional(list_of(number(0.0, 1.0))),
    "prediction_type": text(("epsilon", "sample", "v_prediction")),
    "variance_type": optional(text(max_length=100)),
    "clip_sample": BOOLEAN, "clip_sample_range": number(0.0), "thresholding": BOOLEAN,
    "dynamic_thresholding_ratio": number(0.0, 1.0), "sample_max_value": number(0.0),
    "set_alpha_to_one": BOOLEAN, "skip_prk_steps": BOOLEAN, "rescale_betas_zero_snr": BOOLEAN,
    "timestep_spacing": text(max_length=100), "steps_offset": integer(0, MAX_TRAIN_TIMESTEPS),
    "solver_order": integer(1, 8),                  # ppdiffusers' solvers are of order 1 to 3
    "algorithm_type": text(max_length=100), "solver_type": text(max_length=100),
    "lower_order_final": BOOLEAN, "use_karras_sigmas": optional(BOOLEAN),
    "sigma_min": optional(number(0.0)), "sigma_max": optional(number(0.0)), "sigma_data": optional(number(0.0)),
    "rho": optional(number()), "original_inference_steps": LIMIT_STEPS, "timestep_scaling": number(),
    "disable_corrector": list_of(integer(0, MAX_STEP_CALLS)),
}
LABELS = one_of(text(), list_of(one_of(integer(0, MAX_COUNT), text()), 10_000))     # ids, or a tensor's description
CONDITIONING = {
    "prompt": TEXTS, "negative_prompt": optional(TEXTS), "prompt_embeds": optional(TEXTS),
    "negative_prompt_embeds": optional(TEXTS), "guidance_scale": number(), "eta": number(),
    "guidance_rescale": number(), "class_labels": LABELS, "class_names": optional(list_of(text(), 10_000)),
}
SHAPE = list_of(integer(1, 65_536), length=3)
LATENT = {
    "pipeline": NAME, "kind": text(max_length=100), "vae_class": NAME, "vae_attribute": NAME,
    "scaling_factor": number(0.0), "latent_shape": SHAPE, "image_shape": SHAPE,
    "vae_scale_factor": integer(1, 1024), "denoiser": NAME, "unscale": text(("reciprocal", "divide")),
}
FIELD_NAMES = list_of(Rule(lambda v: isinstance(v, str) and known_field(v), "a field name"), 100, min_length=1)
COLUMN_NAMES = list_of(Rule(lambda v: isinstance(v, str) and IDENTIFIER.fullmatch(v) is not None and not known_field(v),
                            "a column name (an identifier, not a field's)"), 1000)
COUNT = integer(0, MAX_COUNT)

# every top-level field a reader uses, and what it accepts; REQUIRED ones every version has written
REQUIRED = ("fields",)
META = {
    "format_version": integer(1, 1_000_000), "fields": FIELD_NAMES,
    "scheduler": NAME, "sampler": optional(text(max_length=100)), "variant": optional(text()),
    "scheduler_config": optional(table(SCHEDULER_CONFIG)),
    "num_inference_steps": integer(0, MAX_STEP_CALLS), "set_timesteps": optional(LIMIT_STEPS),
    "every": integer(1, MAX_COUNT), "seed": optional(COUNT), "batch_size": integer(1, MAX_COUNT),
    "chunk": optional(integer(1, MAX_COUNT)),
    "complete": BOOLEAN, "steps_run": optional(COUNT), "steps_recorded": COUNT, "steps_on_disk": optional(COUNT),
    "first_nonfinite": optional(list_of(number(), length=2)),
    "store": optional(text(STORES)), "dtype": optional(text(DTYPES)),
    "model": optional(text(max_length=10_000)), "versions": optional(table(values=optional(text(max_length=100)))),
    "step_arguments": optional(table(values=SCALAR)),
    "space": optional(text(("latent", "pixels"))), "latent": optional(table(LATENT)),
    "decoded": optional(table({"method": text(("vae", "approx")), "fields": FIELD_NAMES})),
    "conditioning": optional(table(CONDITIONING)), "shown_as": optional(table(values=text(max_length=100))),
    "step_columns": COLUMN_NAMES, "sample_columns": COLUMN_NAMES,
    "clipping": optional(text(("thresholding", "clip_sample"))),
}


def _shown(value) -> str:
    """A refused value as the message quotes it: its repr, cut to SHOWN characters."""
    text_ = repr(value)
    return text_ if len(text_) <= SHOWN else text_[:SHOWN] + "…"


def meta_problem(meta: dict, schema: dict = META, prefix: str = "", required: tuple = ()) -> Optional[str]:
    """What is wrong with `meta` by `schema` ("FIELD must be …, got …"), or None when every field it
    names and holds is accepted and the `required` ones are there; a table's own fields are checked in
    turn (FIELD.KEY)."""
    for name, rule in schema.items():
        if name not in meta and name in required:
            return f"{name} is missing: it must be {rule.accepted}"
        if name not in meta:
            continue
        value = meta[name]
        if not rule.ok(value):
            return f"{prefix}{name} must be {rule.accepted}, got {_shown(value)}"
        if rule.inner and isinstance(value, dict):
            problem = meta_problem(value, rule.inner, f"{prefix}{name}.")
            if problem:
                return problem
    return None


def check_meta(path, meta: dict, required: tuple = REQUIRED) -> dict:
    """`meta` if every field the schema names is of its type and range (and the `required` ones are there:
    a file's; a Trajectory in memory has its fields as arrays); else one TrajectoryError naming the field,
    what it accepts and the value it has."""
    problem = meta_problem(meta, required=required)
    if problem:
        raise TrajectoryError(f"{path}: its metadata's {problem}")
    return meta
