"""An explorer to scrub through a run: one self-contained HTML file (no network, no CDN).

    view = ppddpm.pictures.explorer.explore(traj)    # or explore(traj, other=traj_b) / explore(traj, ab=report)
    view                                             # displays inline in Jupyter / AI Studio
    view.save("view.html")                           # or: ppddpm view RUN.npz [--with B.npz | --ab ab.json]

A slider (arrow keys, Home/End, space to play) over the recorded steps; panes for x_t, x̂_0 as
the step used it, x̂_0 before clipping, ε̂, z and where clipping changed x̂_0 (those recorded);
the step's own numbers, as its sampler defines them, with their equation numbers (MATH.md): ᾱ_t,
ᾱ_prev and eq. (7)'s β̃_t for DDPM, σ_t(η) of eq. (16) for DDIM, the noise level σ for the σ-space
samplers, … — read from the run file's per-step columns alone (no paddle: a run copied to a
machine without it opens the same); a chooser for the sample in a batch;
with a second run or an A/B report, the |Δ x_{t−1}| curve with a cursor at the current step and
the two runs side by side with their difference. Frames are 8-bit images (the quantisation is
stated in the page): PNG, or JPEG (quality 85) for frames larger than 64x64, where noise makes
PNG large.
"""
from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Optional

import numpy as np

from ppddpm._io import atomic_path
from ppddpm.core.adapters import by_family
from ppddpm.errors import BadValue, parse_json, regular_file
from ppddpm.pipelines.latent.display import caption, displayable
from ppddpm.reference.ddpm import posterior_coefficients_of
from ppddpm.storage.legacy import sampler_family
from ppddpm.storage.trajectory import Trajectory

PANES = [("sample", "x_t (the step's input)"), ("prev_sample", "x_{t-1} (the step's output)"),
         ("pred_original_sample", "x̂_0 as the step used it (eq. 15, clipped)"),
         ("pred_original_sample_unclipped", "x̂_0 before clipping (eq. 15)"),
         ("model_output", "ε̂ = ε_θ(x_t, t)"), ("noise", "z, the noise the step added")]
JPEG_ABOVE = 64          # frames larger than this (pixels a side) are JPEG, else PNG


def _encode(x: np.ndarray, lo: float = -1.0, hi: float = 1.0) -> str:
    """[C, H, W] → a data URI of the 8-bit image of (x − lo)/(hi − lo), clipped to [0, 1]."""
    from PIL import Image

    a = np.clip((np.asarray(x, np.float64) - lo) / (hi - lo), 0, 1)
    a = (a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0)) * 255
    image = Image.fromarray(a.round().astype(np.uint8))
    buf = io.BytesIO()
    if max(image.size) > JPEG_ABOVE:
        image.convert("RGB" if image.mode != "L" else "L").save(buf, format="JPEG", quality=85)
        kind = "jpeg"
    else:
        image.save(buf, format="PNG", optimize=True)
        kind = "png"
    return f"data:image/{kind};base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _numbers(traj) -> list:
    """Per recorded step: t, its stage, and the rows [label, value] of the numbers its sampler has,
    from the run's columns (a value per sample where the column is kept per sample) — ᾱ_t and ᾱ_prev
    (variance-preserving samplers; for DDPM eq. (7)'s coefficients and β̃_t from them), σ of x_t and
    x_{t−1} (σ-space samplers), the std of the noise the step added as its family defines it, and the
    share of x̂_0 its clipping changed."""
    family = sampler_family(traj.meta) or ""
    columns, rows = set(traj.columns), []
    clipping = traj.meta.get("clipping")
    clipped = "share of x̂_0 " + (f"changed by {clipping}" if clipping else "clipped")
    for i, t in enumerate(np.asarray(traj.timesteps, np.float64)):
        shown = []
        if {"alpha_bar", "alpha_bar_prev"} <= columns:
            ab, ab_prev = float(traj.column("alpha_bar")[i]), float(traj.column("alpha_bar_prev")[i])
            shown += [["ᾱ_t (eq. 4)", ab], ["ᾱ_prev, of the x_{t−1} the step makes", ab_prev]]
            if family == "ddpm":
                c_x0, c_xt, beta_tilde = posterior_coefficients_of(ab, ab_prev)
                shown += [["x̂_0 coefficient of μ̃_t, √ᾱ_prev β_t/(1−ᾱ_t) (eq. 7)", c_x0],
                          ["x_t coefficient of μ̃_t, √α_t (1−ᾱ_prev)/(1−ᾱ_t) (eq. 7)", c_xt],
                          ["β̃_t (eq. 7)", beta_tilde]]
        if {"noise_level", "noise_level_prev"} <= columns:
            shown += [["σ of x_t, √((1−ᾱ)/ᾱ): the model sees x_t/√(σ²+1)", float(traj.column("noise_level")[i])],
                      ["σ of the x_{t−1} the step makes", float(traj.column("noise_level_prev")[i])]]
        shown.append([by_family(family).noise, float(traj.noise_std[i])])
        share = np.asarray(traj.clip_fraction[i], np.float64).reshape(-1)
        shown.append([clipped, [float(v) for v in share], "%"])
        rows.append({"t": float(t), "stage": str(traj.stages[i]) if len(traj.stages) else "", "rows": shown})
    return rows


def _frames(traj) -> dict:
    """{field: [[data URI per sample] per recorded step]} for the recorded panes, plus the mask of where
    clipping changed x̂_0 (`clip_mask`) when x̂_0 before clipping is recorded."""
    out = {}
    for field, _ in PANES:
        if field not in traj.fields:
            continue
        data = np.asarray(traj.field(field), np.float32)
        wide = field in ("model_output", "noise")                   # N(0, 1): show ±3
        out[field] = [[_encode(data[i, b], *((-3.0, 3.0) if wide else (-1.0, 1.0))) for b in range(data.shape[1])]
                      for i in range(len(data))]
    if "pred_original_sample_unclipped" in traj.fields:
        mask = clip_mask(traj.pred_original_sample_unclipped, traj.clip_fraction)
        out["clip_mask"] = [[_encode(mask[i, b].astype(np.float32), 0.0, 1.0) for b in range(mask.shape[1])]
                            for i in range(len(mask))]
    return out


def clip_mask(unclipped, share) -> np.ndarray:
    """Where the step's clipping changed x̂_0, [N, B, C, H, W] bool: in each sample the values of x̂_0
    before clipping (`unclipped`) beyond the bound the step used (clip_sample_range, or thresholding's
    s) — which are its round(share · n) largest |x̂_0|, `share` being the recorded clip_fraction ([N, B];
    [N, 1] in files of 0.1–0.4: the batch's). Read off the run: no bound recomputed."""
    raw = np.abs(np.asarray(unclipped, np.float32))
    share = np.asarray(share, np.float64).reshape(len(raw), -1)
    flat = raw.reshape(raw.shape[0], raw.shape[1], -1)
    mask = np.zeros(flat.shape, bool)
    n = flat.shape[2]
    for i in range(flat.shape[0]):
        for b in range(flat.shape[1]):
            k = int(round(share[i, min(b, share.shape[1] - 1)] * n))
            if k > 0:
                mask[i, b, np.argpartition(flat[i, b], n - k)[n - k:]] = True
    return mask.reshape(raw.shape)


class Explorer:
    """The page, built once; shows inline in a notebook, `save(path)` writes the HTML file."""

    def __init__(self, html_text: str, title: str):
        self.html, self.title = html_text, title

    def save(self, path) -> Path:
        path = Path(path)
        if path.suffix.lower() not in (".html", ".htm"):
            raise BadValue(f"the explorer is written as .html, got {path.name!r}")
        with atomic_path(path, suffix=".html") as tmp:
            tmp.write_text(self.html, encoding="utf-8")
        return path

    def _repr_html_(self):
        # an iframe keeps the page's script and styles apart from the notebook's
        return (f'<iframe srcdoc="{html.escape(self.html, quote=True)}" style="width:100%;height:720px;border:0" '
                f'title="{html.escape(self.title)}"></iframe>')

    def __len__(self):
        return len(self.html.encode("utf-8"))

    @property
    def size(self) -> str:
        """The page's size as one reads it: "40 KB" below a MiB, "1.3 MB" from one on (binary units)."""
        n = len(self)
        return f"{n / 2 ** 20:.1f} MB" if n >= 2 ** 20 else f"{max(1, round(n / 2 ** 10))} KB"


def run_labels(a, b, names=(None, None)) -> tuple:
    """Labels for two runs shown side by side, from what tells them apart: the seed, scheduler,
    variant and sampling steps that differ ("seed 3" vs "seed 4"), after the file names where
    they were given; "this run" / "the other run" when nothing does."""
    def facts(run):
        return {"seed": run.meta.get("seed"), "scheduler": run.scheduler, "variant": run.meta.get("variant"),
                "steps": run.meta.get("num_inference_steps")}

    fa, fb = facts(a), facts(b)
    differ = [key for key in fa if fa[key] != fb[key]]
    labels = []
    for name, f, fallback in ((names[0], fa, "this run"), (names[1], fb, "the other run")):
        told = ", ".join(f"{key} {f[key]}" for key in differ)
        named = name if name and names[0] != names[1] else None
        labels.append(f"{named} ({told})" if named and told else named or told or fallback)
    return tuple(labels)


def explore(traj, other=None, ab=None, title: Optional[str] = None) -> Explorer:
    """The explorer of `traj` (a Trajectory, or a path to one); `other`: a second run to show
    side by side with the difference; `ab`: an ABReport (or its JSON path) whose |Δ x_{t−1}| curve
    is drawn with a cursor."""
    names = [Path(run).name if isinstance(run, (str, Path)) else None for run in (traj, other)]
    if isinstance(traj, (str, Path)):
        traj = Trajectory.load(traj)
    if isinstance(other, (str, Path)):
        other = Trajectory.load(other)
    traj.check_recorded()
    traj, other = displayable(traj), (displayable(other) if other is not None else None)    # latent runs: pictures
    curve = None
    if other is not None:
        if not np.array_equal(np.asarray(traj.timesteps, float), np.asarray(other.timesteps, float)):
            raise BadValue("the two runs recorded different steps; record both with the same steps and every")
        a, b = np.asarray(traj.prev_sample, np.float64), np.asarray(other.prev_sample, np.float64)
        if a.shape != b.shape:
            raise BadValue(f"the two runs differ in shape: {a.shape} vs {b.shape}")
        diff = np.abs(a - b)
        this, that = run_labels(traj, other, names)
        curve = {"label": f"max |Δ x_{{t−1}}|, {this} vs {that}",
                 "t": [float(t) for t in traj.timesteps], "values": diff.reshape(len(a), -1).max(axis=1).tolist()}
        peak = float(diff.max())
        side = {"other": [[_encode(b[i, s]) for s in range(b.shape[1])] for i in range(len(b))],
                "difference": [[_encode(diff[i, s], 0.0, max(peak, 1e-12)) for s in range(b.shape[1])]
                               for i in range(len(b))],
                "difference_label": (f"|difference| (white = {peak:.2e})" if peak > 0 else
                                     "|difference|: identical, 0 at every pixel of every step"), "other_name": that}
    else:
        side = None
    if ab is not None:
        if isinstance(ab, (str, Path)):
            curve = _ab_curve(Path(ab))
        else:
            name = ab.others[0]
            curve = {"label": f"max |Δ x_{{t−1}}|, {name} vs {ab.reference} (A/B, {ab.mode})",
                     "t": [float(t) for t in ab.timesteps], "values": ab.max_abs_prev[name].max(axis=1).tolist(),
                     "bound": ab.step_bound().max(axis=1).tolist()}
    title = title or (f"ppddpm explorer — {traj.scheduler}, {traj.meta.get('num_inference_steps', len(traj))} steps, "
                      f"seed {traj.meta.get('seed', '?')}, variant {traj.meta.get('variant', 'ppdiffusers')}"
                      + (f", {caption(traj)}" if caption(traj) else ""))
    payload = {"title": title, "numbers": _numbers(traj), "frames": _frames(traj),
               "panes": [[f, label] for f, label in PANES if f in traj.fields], "side": side, "curve": curve,
               "batch": int(np.asarray(traj.field(traj.fields[0])).shape[1]),
               "quantisation": f"frames are 8-bit images: PNG up to {JPEG_ABOVE}x{JPEG_ABOVE} pixels, JPEG "
                               f"(quality 85) above; x_t, x̂_0 shown on [−1, 1], ε̂ and z on [−3, 3]"}
    page = _PAGE.replace("__TITLE__", html.escape(title)).replace("__DATA__", _script_json(payload))
    return Explorer(page, title)


def _ab_curve(path: Path) -> dict:
    """The |Δ x_{t−1}| curve of an ab.json (`ABReport.to_json`); anything else is one BadValue."""
    path = regular_file(path, "A/B report")
    data = parse_json(path.read_bytes(), f"{path} is not an A/B report", hint="give the ab.json `ppddpm ab` wrote")
    try:
        name = data["variants"][1]
        curve = {"label": f"max |Δ x_{{t−1}}|, {name} vs {data['reference']} (A/B, {data['mode']})",
                 "t": [float(t) for t in data["timesteps"]],
                 "values": [float(max(v)) for v in data["per_variant"][name]["max_abs_prev"]],
                 "bound": [float(max(v)) for v in data["bound"]]}
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise BadValue(f"{path} is not an A/B report of `ppddpm ab` (missing or malformed "
                       f"{type(exc).__name__}: {exc}); it needs variants, reference, mode, timesteps, "
                       f"per_variant and bound") from None
    if not len(curve["t"]) == len(curve["values"]) == len(curve["bound"]) or not curve["t"]:
        raise BadValue(f"{path}: its timesteps, values and bound differ in length; not one A/B report")
    return curve


def _script_json(payload) -> str:
    """`payload` as a JavaScript literal safe inside <script>: no `<`, `>` or `&` in it at all (in
    strings they become \\u003c …), so no label can close the script or open a comment; every
    label then reaches the page through textContent / setAttribute, never as markup."""
    text = json.dumps(payload)                      # ensure_ascii: U+2028/2029 escaped too
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


_PAGE = r"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:12px;color:#222}
h1{font-size:16px;margin:0 0 8px}
#controls{display:flex;gap:10px;align-items:center;flex-wrap:wrap;margin-bottom:8px}
#slider{flex:1;min-width:240px}
.panes{display:flex;flex-wrap:wrap;gap:10px}
.pane{text-align:center;font-size:12px;max-width:200px}
.pane img{width:180px;height:180px;object-fit:contain;image-rendering:pixelated;border:1px solid #ccc;display:block}
#numbers{font-family:ui-monospace,monospace;font-size:12px;border-collapse:collapse;margin:8px 0}
#numbers td{padding:1px 8px;border-bottom:1px solid #eee}
#curve{border:1px solid #ddd;margin-top:8px}
.note{color:#666;font-size:11px}
</style></head><body>
<h1 id="title"></h1>
<div id="controls">
<button id="play" title="space">▶ play</button>
<input id="slider" type="range" min="0" value="0" step="1" aria-label="recorded step">
<span>step <b id="stepno"></b> · t = <b id="tval"></b> <span id="stage"></span></span>
<label id="samplebox">sample <select id="sample"></select></label>
</div>
<div class="panes" id="panes"></div>
<table id="numbers"></table>
<svg id="curve" width="720" height="170" style="display:none"></svg>
<p class="note" id="quant"></p>
<p class="note">← → or the slider: one recorded step; Home / End: first / last; space: play / pause.</p>
<script>
const D = __DATA__;
const n = D.numbers.length;
const $ = id => document.getElementById(id);
$("title").textContent = D.title; $("quant").textContent = D.quantisation;
const slider = $("slider"); slider.max = n - 1;
const sel = $("sample");
for (let b = 0; b < D.batch; b++) {
  const o = document.createElement("option"); o.value = b; o.textContent = b; sel.appendChild(o);
}
if (D.batch < 2) $("samplebox").style.display = "none";
const panes = [];
function addPane(key, label, source) {
  const div = document.createElement("div"); div.className = "pane";
  const img = document.createElement("img"); img.id = "img-" + key; img.alt = label;
  const cap = document.createElement("div"); cap.textContent = label;
  div.appendChild(img); div.appendChild(cap); $("panes").appendChild(div); panes.push([img, source]);
}
for (const [f, label] of D.panes) addPane(f, label, D.frames[f]);
if (D.frames.clip_mask) addPane("clip_mask", "where clipping changed x̂_0 (white)", D.frames.clip_mask);
if (D.side) { addPane("other", "x_{t-1}: " + D.side.other_name, D.side.other);
              addPane("difference", D.side.difference_label, D.side.difference); }
const fmt = v => (v === undefined || v === null) ? "—"
  : (Math.abs(v) < 1e-3 && v !== 0 ? v.toExponential(4) : v.toFixed(6));
function numbers(r, b) {
  const rows = [["t (this step)", r.t]];
  for (const [label, value, unit] of r.rows) {
    const v = Array.isArray(value) ? value[Math.min(b, value.length - 1)] : value;
    rows.push([label, unit === "%" ? (100 * v).toFixed(2) + " %" : fmt(v)]);
  }
  const table = $("numbers"); table.replaceChildren();
  for (const [k, v] of rows) {
    const tr = table.insertRow(), key = tr.insertCell(), value = tr.insertCell();
    key.textContent = k; value.textContent = v;
  }
}
const svg = $("curve");
let cursor = null, xs = null;
if (D.curve) {
  svg.style.display = "block";
  const W = 720, H = 170, L = 60, R = 10, T = 22, B = 24, vals = D.curve.values.map(v => Math.max(v, 1e-12));
  const all = vals.concat(D.curve.bound || []).map(v => Math.max(v, 1e-12));
  const lo = Math.log10(Math.min(...all)), hi = Math.log10(Math.max(...all)) + 1e-9;
  const tmax = Math.max(...D.curve.t), tmin = Math.min(...D.curve.t);
  const X = t => L + (tmax - t) / Math.max(tmax - tmin, 1e-9) * (W - L - R);
  const Y = v => T + (hi - Math.log10(Math.max(v, 1e-12))) / Math.max(hi - lo, 1e-9) * (H - T - B);
  const NS = svg.namespaceURI;
  const el = (tag, attrs, text) => {               // attributes set one by one, text as textContent: no markup
    const e = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    svg.appendChild(e); return e;
  };
  const line = (arr, color, dash) => el("polyline", Object.assign({fill: "none", stroke: color, "stroke-width": "1.5",
     points: arr.map((v, i) => X(D.curve.t[i]).toFixed(1) + "," + Y(v).toFixed(1)).join(" ")},
     dash ? {"stroke-dasharray": "4 3"} : {}));
  svg.replaceChildren();
  el("text", {x: L, y: 14, "font-size": 12},
     D.curve.label + (D.curve.bound ? " — dashed: float32 bound" : "") + " (log scale)");
  line(vals, "#1f77b4"); if (D.curve.bound) line(D.curve.bound, "#444", true);
  el("text", {x: 2, y: T + 8, "font-size": 10}, Math.pow(10, hi).toExponential(1));
  el("text", {x: 2, y: H - B, "font-size": 10}, Math.pow(10, lo).toExponential(1));
  el("text", {x: L, y: H - 6, "font-size": 10}, "t = " + tmax);
  el("text", {x: W - R - 40, y: H - 6, "font-size": 10}, "t = " + tmin);
  el("line", {id: "cursor", y1: T, y2: H - B, stroke: "#d62728", "stroke-width": "1.5"});
  cursor = document.getElementById("cursor"); xs = X;
}
function show(i) {
  i = Math.max(0, Math.min(n - 1, i)); slider.value = i;
  const b = +sel.value, r = D.numbers[i];
  for (const [img, source] of panes) img.src = source[i][b];
  $("stepno").textContent = (i + 1) + " / " + n; $("tval").textContent = r.t;
  $("stage").textContent = r.stage ? "(" + r.stage + ")" : "";
  numbers(r, b);
  if (cursor) { const x = xs(r.t); cursor.setAttribute("x1", x); cursor.setAttribute("x2", x); }
}
slider.addEventListener("input", () => show(+slider.value));
sel.addEventListener("change", () => show(+slider.value));
let timer = null;
function play() {
  if (timer) { clearInterval(timer); timer = null; $("play").textContent = "▶ play"; return; }
  $("play").textContent = "⏸ pause";
  timer = setInterval(() => { const i = +slider.value; if (i >= n - 1) { play(); return; } show(i + 1); }, 80);
}
$("play").addEventListener("click", play);
document.addEventListener("keydown", e => {
  if (e.target === sel) return;
  if (e.key === "ArrowRight") { show(+slider.value + 1); e.preventDefault(); }
  else if (e.key === "ArrowLeft") { show(+slider.value - 1); e.preventDefault(); }
  else if (e.key === "Home") { show(0); e.preventDefault(); }
  else if (e.key === "End") { show(n - 1); e.preventDefault(); }
  else if (e.key === " ") { play(); e.preventDefault(); }
});
show(0);
</script></body></html>
"""
