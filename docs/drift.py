"""Does every committed number still follow from the code? The comparison `make docs` sets up and CI runs.

`make docs` (docs/make_docs.py) computes each section of generated numbers twice with this version:
at its full setting (what README, docs/figures and the notebooks show) and at a short setting CI can
afford (a few steps, a few seeds), and commits both — the short one as the JSON's `check`. CI computes
the short setting again (tests/test_docs_drift.py) and compares it with `check`, number by number:

    differences(committed["check"], recomputed)      # [(path, committed, recomputed), …]; [] when they agree

A difference means the code now computes something else than what was published: the published
full-setting numbers no longer follow from it, and `make docs` must run again. Notebooks are held the
same way: each code cell keeps, in its metadata, the text it printed when run with PPDDPM_FAST=1
(`notebook_differences`), and CI runs every notebook with PPDDPM_FAST=1.

Tolerances, and why two:
- Rounding-level quantities — the gap between two routes that agree (max |Δ|, "× bound"), PSNR of
  images that agree beyond 100 dB — are float32 rounding noise: their digits depend on the CPU's
  kernels and paddle's thread count (measured here: 8.3e-07 with one thread, 1.1e-06 with two, for
  the same 20-step A/B). They are compared within a factor of `NOISE_FACTOR`: a change of formula
  moves them by orders of magnitude, a change of kernel does not. Generation pins the thread count
  (`THREADS`), so on one machine they repeat bit for bit.
- Everything else (step counts, clip shares, PSNR of images that differ, scores, σ) is held to
  `RTOL` relative: the same code on another CPU moves it by float32 rounding, ~1e-6.
"""
from __future__ import annotations

import math
import re
from typing import Any, List, Tuple

from ppddpm.analysis.findings import THREADS as _THREADS   # one definition: the demo uses it too

RTOL = 1e-3
NOISE_FACTOR = 4.0
THREADS = str(_THREADS)  # OMP_NUM_THREADS for every generated number (make docs and the CI check)
# keys whose values are rounding noise (module docstring); PSNR is noise only above NOISE_PSNR_DB
NOISE_KEYS = re.compile(r"(max_abs_prev|max_rel_prev|max_abs_x0|worst_ratio_to_bound|worst_ratio|ratio|gap\w*)$")
NOISE_PSNR_DB = 100.0


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _noise(path: str, a, b) -> bool:
    key = path.rsplit(".", 1)[-1].split("[", 1)[0]
    if NOISE_KEYS.search(key):
        return True
    return "psnr" in path and all(_is_number(x) and x > NOISE_PSNR_DB for x in (a, b))


def _numbers_agree(path: str, a, b) -> bool:
    if isinstance(a, bool) or isinstance(b, bool) or isinstance(a, int) and isinstance(b, int):
        return a == b                                  # counts and verdicts: exactly
    a, b = float(a), float(b)
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if _noise(path, a, b):
        if a == 0 or b == 0:
            return a == b
        return max(abs(a), abs(b)) / min(abs(a), abs(b)) <= NOISE_FACTOR and (a > 0) == (b > 0)
    return abs(a - b) <= RTOL * max(abs(a), abs(b))


def differences(committed: Any, recomputed: Any, path: str = "") -> List[Tuple[str, Any, Any]]:
    """Every place where two JSON-like values disagree (module docstring's tolerances): nested dicts
    and lists walked by key and index; a key or item present on one side only is a difference too."""
    if isinstance(committed, dict) and isinstance(recomputed, dict):
        out = []
        for key in list(committed) + [k for k in recomputed if k not in committed]:
            sub = f"{path}.{key}" if path else str(key)
            if key not in committed or key not in recomputed:
                out.append((sub, committed.get(key, "<absent>"), recomputed.get(key, "<absent>")))
            else:
                out += differences(committed[key], recomputed[key], sub)
        return out
    if isinstance(committed, list) and isinstance(recomputed, list):
        if len(committed) != len(recomputed):
            return [(f"{path} (length)", len(committed), len(recomputed))]
        return [d for i, (a, b) in enumerate(zip(committed, recomputed)) for d in differences(a, b, f"{path}[{i}]")]
    if _is_number(committed) and _is_number(recomputed) or isinstance(committed, bool) and isinstance(recomputed, bool):
        return [] if _numbers_agree(path, committed, recomputed) else [(path, committed, recomputed)]
    return [] if committed == recomputed else [(path, committed, recomputed)]


def describe(source: str, found: List[Tuple[str, Any, Any]], limit: int = 8) -> str:
    """One line per difference: which number, the committed value and what the code gives now."""
    lines = [f"{source}: {len(found)} generated number(s) no longer follow from the code; run `make docs`:"]
    lines += [f"  {path}: committed {a!r}, the code now gives {b!r}" for path, a, b in found[:limit]]
    if len(found) > limit:
        lines.append(f"  … and {len(found) - limit} more")
    return "\n".join(lines)


# --------------------------------------------------------------------------- notebooks

FAST_KEY = "ppddpm_fast_outputs"       # cell metadata: the text the cell printed with PPDDPM_FAST=1
VOLATILE = re.compile(r" at 0x[0-9a-f]+")       # object addresses: not a number of ours


def cell_text(outputs) -> List[str]:
    """What a code cell showed as text — streams and text/plain results, in order; pictures are left to
    their titles (the figures' text is part of the plain repr only as `<Figure size … with N Axes>`)."""
    texts = []
    for out in outputs:
        if out.get("output_type") == "stream":
            texts.append("".join(out.get("text", "")))
        elif "text/plain" in out.get("data", {}) and not {"image/png", "text/html"} & set(out["data"]):
            texts.append("".join(out["data"]["text/plain"]))
        elif out.get("output_type") == "error":
            texts.append(f"{out.get('ename')}: {out.get('evalue')}")
    return [VOLATILE.sub(" at 0x…", t) for t in texts]


def notebook_differences(committed_nb, executed_nb) -> List[Tuple[str, Any, Any]]:
    """Per code cell, the text a fresh PPDDPM_FAST=1 run printed against the text kept in the committed
    notebook's cell metadata (`FAST_KEY`, written by `make docs`), compared line by line with the
    tolerances above for every number in the line."""
    committed = [c for c in committed_nb.cells if c.cell_type == "code"]
    executed = [c for c in executed_nb.cells if c.cell_type == "code"]
    if len(committed) != len(executed):
        return [("code cells", len(committed), len(executed))]
    found = []
    for k, (old, new) in enumerate(zip(committed, executed)):
        kept = old.get("metadata", {}).get(FAST_KEY)
        if kept is None:
            found.append((f"cell {k}", "<no fast outputs kept: run make docs>", None))
            continue
        found += _text_differences(f"cell {k}", "\n".join(kept), "\n".join(cell_text(new.get("outputs", []))))
    return found


NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")


def _text_differences(where: str, old: str, new: str) -> List[Tuple[str, Any, Any]]:
    # blank lines left out: a kernel splits a cell's stdout into as many stream outputs as it flushed, which
    # `cell_text` keeps apart, so where one run has "a\nb\n" another has "a\n", "b\n" (an empty line between)
    old_lines, new_lines = ([line for line in text.splitlines() if line.strip()] for text in (old, new))
    if len(old_lines) != len(new_lines):
        return [(f"{where} (lines)", old, new)]
    found = []
    for i, (a, b) in enumerate(zip(old_lines, new_lines)):
        if NUMBER.sub("#", a) != NUMBER.sub("#", b):
            found.append((f"{where}, line {i + 1}", a, b))
            continue
        for x, y in zip(NUMBER.findall(a), NUMBER.findall(b)):
            as_int = not re.search(r"[.eE]", x + y)
            x, y = (int(x), int(y)) if as_int else (float(x), float(y))
            if not _numbers_agree(f"{where}.line", x, y):
                found.append((f"{where}, line {i + 1}", a, b))
                break
    return found
