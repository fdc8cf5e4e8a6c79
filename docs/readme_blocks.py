"""README's measured tables, rendered from the committed JSON — one definition per number.

`make docs` (docs/make_docs.py) writes docs/figures/*.json and then fills README's blocks between
`<!-- NAME:start … -->` and `<!-- NAME:end -->` with the renderer of that JSON; tests/test_readme.py
fails when a block and its JSON disagree (`all_blocks`).

Units, named once: |Δ| in the diffusion range [−1, 1]; "× bound": a step's |Δ x_{t−1}| over the
float32 bound of `ABReport.step_bound` (≤ 1 is equivalent); PSNR of final images as displayed
(mapped to [0, 1] and clipped, `ABReport.final_psnr`); scores as `ppddpm.analysis.metrics` defines them.
"""
import json
import re
import statistics
import types
from pathlib import Path

from ppddpm.analysis.findings import equivalence_table

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
FIGURES = ROOT / "docs" / "figures"


def block(name: str, text: str) -> str:
    match = re.search(rf"<!-- {name}:start[^>]*-->\n(.*?)\n?<!-- {name}:end -->", text, re.S)
    if not match:
        raise KeyError(f"README.md has no {name} block")
    return match.group(1)


def fill(name: str, body: str, source: str, readme: Path = README) -> None:
    text = readme.read_text(encoding="utf-8")
    new, n = re.subn(rf"<!-- {name}:start[^>]*-->\n.*?<!-- {name}:end -->",
                     lambda m: f"<!-- {name}:start (written by {source}) -->\n{body}\n<!-- {name}:end -->",
                     text, flags=re.S)
    if n != 1:
        raise SystemExit(f"README.md has no {name} block to fill")
    readme.write_text(new, encoding="utf-8")


def _span(lo, hi, fmt):
    """"a–b", or "a" when both ends print the same."""
    a, b = format(lo, fmt), format(hi, fmt)
    return a if a == b else f"{a}–{b}"


def render_equivalence(data) -> str:
    """The DDPM routes against the stock step (docs/figures/equivalence.json; rows as `ppddpm demo` prints them)."""
    return "\n".join(equivalence_table(data["findings"]))


def render_equivalence_summary(data) -> str:
    """The numbers the prose under the table quotes, computed here rather than typed."""
    rows = data["findings"]
    off = [r for r in rows if not r["clip_sample"]]
    on = [r for r in rows if r["clip_sample"]]
    ratio_off = [r[v]["worst_ratio_to_bound"] for r in off for v in ("direct", "direct-clip-consistent")]
    dep = [r["direct"]["steps_departing"] / r["steps"] for r in on]
    psnr = [p for p in data["free_seeds_direct_psnr_db"] if p is not None]
    fired = [r["steps_with_clipping"] / r["steps"] for r in on]
    return "\n".join([
        f"- **`posterior` is the stock step, bit for bit**: max |Δ| = "
        f"{max(r['posterior']['max_abs_prev'] for r in rows):.0e} in all {len(rows)} settings.",
        f"- **Clipping off: every route agrees** within rounding — the worst step uses "
        f"{_span(min(ratio_off), max(ratio_off), '.2g')} of the bound; max |Δ| ≤ "
        f"{max(r['direct']['max_abs_prev'] for r in off):.1e}.",
        f"- **Clipping on: `direct` departs** at {_span(min(dep), max(dep), '.0%')} of the steps, because clipping "
        f"fires at {_span(min(fired), max(fired), '.0%')} of them on this model (the digits' background is exactly −1 "
        f"and x̂_0 "
        f"overshoots it). The final images stay close — over {data['free_seeds']} seeds (free, "
        f"{data['free_seeds_steps']} steps) PSNR median "
        f"{statistics.median(psnr):.1f} dB, range {min(psnr):.1f}–{max(psnr):.1f} dB: the article's "
        f"\"similar, not identical\".",
        "- **`direct-clip-consistent` agrees with the stock step even with clipping**: the clip of x̂_0 is the "
        "*only* thing that breaks the equivalence."])


def render_bundled_model(data) -> str:
    """What the bundled model is (docs/figures/bundled_model.json, written by docs/ship_model.py)."""
    res, folder = data["resolution"], data["folder"]
    return (f"`{folder}` ({data['size_mb']:.1f} MB): a {data['params'] / 1e6:.2f}M-parameter `UNet2DModel` trained by\n"
            f"`ppddpm train` on scikit-learn's digits at {res}x{res} for {data['steps']} steps at batch "
            f"{data['batch_size']} ({data['took']}).\nCommand, seed, loss curve, the candidates it was chosen from and "
            f"the scores along its training: its [TRAINING.md]({folder}/TRAINING.md).")


def render_quality(data) -> str:
    """The bundled model's scores (docs/figures/quality.json)."""
    s, r = data["samples"], data["real_same_n"]
    return "\n".join([
        f"Scored by `ppddpm.analysis.metrics` (an MLP trained on the digits' train split, held-out accuracy "
        f"{data['classifier_accuracy']:.1%}), n = {s['n']} samples (1000 steps, seeds 0–{s['n'] - 1}) against "
        f"{r['n']} real held-out digits, both taken through the same resize to 8x8:", "",
        "| | samples | real held-out digits | samples / real |", "|---|---|---|---|",
        f"| classifier confidence (mean top-class probability) | {s['confidence']:.3f} | {r['confidence']:.3f} | "
        f"{s['confidence'] / r['confidence']:.0%} |",
        f"| class entropy, nats (ln 10 = 2.303) | {s['class_entropy']:.3f} | {r['class_entropy']:.3f} | "
        f"{s['class_entropy'] / r['class_entropy']:.0%} |",
        f"| Inception-Score analogue (10 at best) | {s['inception_score']:.2f} | {r['inception_score']:.2f} | "
        f"{s['inception_score'] / r['inception_score']:.0%} |",
        f"| Fréchet distance on classifier features (0 at best) | {s['frechet_distance']:.2f} | "
        f"{r['frechet_distance']:.2f} | {s['frechet_distance'] / r['frechet_distance']:.2f}x |",
        "", f"Digits the classifier names in every {data['coverage']['window']} consecutive seeds: at least "
            f"{data['coverage']['fewest']} of 10; samples per digit 0–9: "
            f"{', '.join(map(str, data['coverage']['counts']))}. `ppddpm eval --n {s['n']} --steps 1000` prints "
            f"the same figures."])


def free_vs_apart(ab) -> str:
    r = ab["free batched vs one after another"]
    return f"**{r['median']:.2f}x** ({r['min']:.2f}–{r['max']:.2f})"


def render_benchmarks(data) -> str:
    """The cost table (benchmarks/results.json, written by `make bench`)."""
    m = data["machine"]
    rec, ab, mem = data["recording"], data["ab"], data["memory"]
    ratio = lambda r: f"{r['median']:.2f}x ({r['min']:.2f}–{r['max']:.2f})"  # noqa: E731
    plain = rec["every=1"]["base_s"]
    version = m.get("ppddpm", "0.1.0")           # results.json of 0.1.0 did not record it
    lines = [f"Measured by `make bench` with ppddpm {version}: {m['cpu_count']} CPU cores ({m['processor']}), "
             f"Python {m['python']}, paddle {m['paddle']} ({m['device']}), ppdiffusers {m['ppdiffusers']}, "
             f"{data['model']}, {data['steps']} steps, batch 1, {data['repeats']} interleaved rounds "
             f"(plain, measured, plain, …): median ratio (min–max over rounds).", "",
             f"| what | ratio to a plain `pipe()` run ({plain:.1f} s) | target |", "|---|---|---|",
             f"| recording every=50 | {ratio(rec['every=50'])} | ≤ 1.02x |",
             f"| recording every=1 (x_t, x̂_0) | {ratio(rec['every=1'])} | ≤ 1.05x |",
             f"| recording every=1, all six fields | {ratio(rec['every=1, all fields'])} | |",
             f"| `compare` shadow, 2 variants | {ratio(ab['shadow, 2 variants'])} | ≤ 1.05x |",
             f"| `compare` shadow, 4 variants | {ratio(ab['shadow, 4 variants'])} | |",
             f"| `compare` free, 2 variants, batched | {ratio(ab['free, 2 variants (batched)'])} — "
             f"{free_vs_apart(ab)} of running them one after another "
             f"({ab['2 variants one after another']['median']:.2f}x) | ≤ 0.6x of the two runs |", ""]
    if "UNet batch 2 vs batch 1" in ab:
        unet = ab["UNet batch 2 vs batch 1"]
        floor = unet["median"] / 2
        lines += [f"Batching two lanes into one UNet call saves only what a batch-2 call costs less than two batch-1 "
                  f"calls. Here a batch-2 call costs {ratio(unet)} a batch-1 call (the UNet alone, in the same "
                  f"rounds), so free A/B of 2 variants cannot go below about {floor:.2f}x of two runs on this "
                  f"machine" + (", above the 0.6x target. " if floor > 0.6 else ". ") + "On a GPU, where a "
                  "small batch leaves the device mostly idle, the ratio should be nearer 1 (not measured here).", ""]
    lines += [f"Peak RSS growth recording the memory benchmark's steps (x_t and x̂_0 of 3x256x256; a cheap stand-in "
              f"denoiser, since the recorder's cost does not depend on the model): in memory float32 "
              f"+{mem['memory-float32']['growth_mb']:.0f} MB (the arrays are {mem['expected_float32_mb']:.0f} MB), "
              f"float16 +{mem['memory-float16']['growth_mb']:.0f} MB, **streamed to disk "
              f"+{mem['disk']['growth_mb']:.0f} MB** (target ≤ 150 MB)."]
    if "host_reads" in data:
        h = data["host_reads"]
        lines += ["", f"Host reads of device tensors (each a synchronisation on a GPU) in a {h['steps']}-step run: "
                      f"plain {h['plain']} ({h['plain'] / h['steps']:.1f} per step, ppdiffusers' own loop), "
                      f"recorded every=1 {h['recorded']}: **{h['added_per_step']:.2f} added per step** "
                      f"(frames move in chunks of {h['chunk']} steps)."]
    again = data.get("measured_again", {})
    if again:
        lines += ["", "Measured again later, with ppddpm " + ", ".join(sorted(set(again.values()))) + ": "
                  + ", ".join(f"`--only {'instant' if k == 'instant_errors' else k}`" for k in again) + " (below)."]
    if "instant_errors" in data:
        slowest = max(v["wall_s"] for v in data["instant_errors"].values())
        lines += ["", "Mistakes the arguments (or --model's own JSON files) decide, from `python -m ppddpm …` to its "
                      "one-line error, median of the rounds: "
                      + "; ".join(f"{name} {v['wall_s']:.2f} s (CPU {v['cpu_s']:.2f} s)"
                                  for name, v in data["instant_errors"].items())
                      + f". The slowest, **{slowest:.2f} s**, against the target ≤ 1 s: paddle is not loaded."]
    if "view" in data:
        v = data["view"]
        lines += ["", f"`ppddpm view` of a {v['steps']}-step run of the bundled model (x_t and x̂_0 at every step), "
                      f"from the command to the page written: **{v['view']['median_s']:.2f} s** "
                      f"({v['view']['min_s']:.2f}–{v['view']['max_s']:.2f}; target ≤ 2 s), beside "
                      f"{v['import ppddpm, ppdiffusers']['median_s']:.2f} s for `import ppddpm; import ppdiffusers` "
                      f"alone, which every picture paid before 0.5 (it rebuilt the scheduler); "
                      f"{v['repeats']} interleaved rounds."]
    if "bpd" in data:
        b = data["bpd"]
        full, some = b["all"], b["sampled"]
        lines += ["", f"The variational bound (`ppddpm bpd`, `ppddpm.likelihood.bpd`) of the bundled model on {b['n']} "
                      f"held-out digits, one UNet call per timestep for the batch: all {full['timesteps']} terms in "
                      f"**{full['seconds'] / 60:.1f} min** (target ≤ 10; process CPU "
                      f"{full['cpu_seconds'] / 60:.1f} min), "
                      f"{some['timesteps']} timesteps drawn in **{some['seconds']:.0f} s** (target ≤ 60); load average "
                      f"{b['load_average_before']:.1f} on the 2 shared cores. The estimate from {some['timesteps']} "
                      f"timesteps, {some['mean_bpd']:.2f} ± {some['standard_error']:.2f} bits/dim, against all terms' "
                      f"{full['mean_bpd']:.3f} ± {full['standard_error']:.3f}: uniform draws are noisy where most bits "
                      f"sit in a few small t."]
    if "processes" in data:
        p = data["processes"]
        work, wall = p["work"], p["wall"]
        lines += ["", f"`compare` over {p['seeds']} seeds x {p['steps']} steps (2 variants, shadow), one thread per "
                      f"process, {p['rounds']} interleaved rounds: two paddle.distributed ranks (gloo) are "
                      f"**{work['median']:.2f}x** ({work['min']:.2f}–{work['max']:.2f}) as fast as one process for the "
                      f"work itself ({work['other_s']:.1f} s vs {work['base_s']:.1f} s, gather included; target ≥ "
                      f"1.6x) and {wall['median']:.2f}x for the whole command, start-up of the launcher and both "
                      f"interpreters included ({wall['other_s']:.1f} s vs {wall['base_s']:.1f} s); the reports are "
                      f"{'bitwise equal' if p['reports_equal'] else 'DIFFERENT'}."]
    if "nodes" in data and "wall" in data["nodes"]:
        n = data["nodes"]
        wall = n["wall"]
        lines += ["", f"`ppddpm ab` over {n['seeds']} seeds x {n['steps']} steps on 2 nodes x 1 rank (`--ips`: two "
                      f"network namespaces of this machine joined by a veth pair), {n['rounds']} interleaved rounds: "
                      f"**{wall['median']:.2f}x** ({wall['min']:.2f}–{wall['max']:.2f}) the wall time of one process "
                      f"({wall['other_s']:.1f} s vs {wall['base_s']:.1f} s); the two nodes share this machine's cores, "
                      f"so this is what the nodes' protocol costs, not a speed-up; the reports are "
                      f"{'bitwise equal' if n['reports_equal'] else 'DIFFERENT'}."]
    return "\n".join(lines)


# README blocks rendered from JSON that `make docs` does not compute: the bundled model's record
# (docs/ship_model.py), the objective study (docs/objective_findings.py, hours of training), the paddle
# versions tried (`make compat`) and the benchmarks (`make bench`); the sections' own blocks are in docs/sections.py
def render_compat(data) -> str:
    """The paddle versions `make compat` tried (docs/compat.py writes docs/figures/compat.json)."""
    import compat       # lazy: compat imports this module to fill its block

    return compat.render(data)


def render_objective(data) -> str:
    """The objective study (docs/objective_findings.py writes docs/figures/objective.json; hours, not in make docs)."""
    import objective_findings       # lazy: it imports the training code

    return objective_findings.render(data)


OTHERS = {  # README block → (JSON file, renderer, the program that writes the JSON)
    "objective-findings": (FIGURES / "objective.json", render_objective, "docs/objective_findings.py"),
    "bundled-model": (FIGURES / "bundled_model.json", render_bundled_model, "docs/ship_model.py"),
    "compat": (FIGURES / "compat.json", render_compat, "docs/compat.py"),
    "benchmarks-table": (ROOT / "benchmarks" / "results.json", render_benchmarks, "benchmarks/run_all.py"),
}


def fill_others() -> None:
    """Fill the blocks of `OTHERS`, and README's inline numbers, from their committed JSON."""
    for name, (path, render, writer) in OTHERS.items():
        fill(name, render(json.loads(path.read_text())), f"{writer} from {path.relative_to(ROOT)}")
    fill("api", render_api(), "docs/readme_blocks.py from ppddpm.__all__")
    fill_inline()


def all_blocks() -> dict:
    """Every generated README block: {name: (JSON path, render)} — the sections' and `OTHERS`."""
    import make_docs

    blocks = {name: (path, render) for name, (path, render, _) in OTHERS.items()}
    for section in make_docs.all_sections():
        blocks.update({name: (section.json_path, render) for name, render in section.blocks.items()})
    return blocks


# Numbers in README's prose: `<!-- n:SOURCE:PATH:FORMAT -->VALUE<!-- /n -->` shows `format(PATH of SOURCE,
# FORMAT)`, SOURCE a JSON in docs/figures (by name, without .json) or "bench" (benchmarks/results.json),
# PATH keys and [indices] joined by dots ("noise.confidence", "findings[0].steps")
INLINE = re.compile(r"<!-- n:(?P<source>[\w-]+):(?P<path>[^ :]+):(?P<fmt>[^ ]*) -->(?P<value>.*?)<!-- /n -->")


def _source(name: str) -> Path:
    return ROOT / "benchmarks" / "results.json" if name == "bench" else FIGURES / f"{name}.json"


def lookup(data, path: str):
    for key in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        data = data[int(key[1:-1])] if key.startswith("[") else data[key]
    return data


def inline_value(match) -> str:
    return format(lookup(json.loads(_source(match["source"]).read_text()), match["path"]), match["fmt"])


def fill_inline(readme: Path = README) -> None:
    """Every inline number of README from its committed JSON."""
    text = readme.read_text(encoding="utf-8")
    readme.write_text(INLINE.sub(lambda m: m.group(0).replace(f"-->{m['value']}<!--", f"-->{inline_value(m)}<!--"),
                                 text), encoding="utf-8")


def stale_blocks(readme_text: str) -> list:
    """The README blocks and inline numbers that are not their committed JSON as rendered now:
    [(block or inline number, JSON file)]."""
    stale = []
    for name, (path, render) in all_blocks().items():
        if block(name, readme_text) != render(json.loads(path.read_text())):
            stale.append((name, str(path.relative_to(ROOT))))
    for m in INLINE.finditer(readme_text):
        if m["value"] != inline_value(m):
            stale.append((f"{m['path']} = {m['value']!r} (the JSON gives {inline_value(m)!r})",
                          str(_source(m["source"]).relative_to(ROOT))))
    return stale


class _Written(str):
    """An annotation shown as written (`n: int`), not as the string it is under postponed evaluation."""

    def __repr__(self):
        return str(self)


def _signature(obj) -> str:
    """`obj`'s call signature as `inspect` gives it (an exception: its base; a constant: its value)."""
    import inspect     # lazy: only the API block needs it

    if isinstance(obj, type) and issubclass(obj, BaseException):
        return f"exception ({obj.__bases__[0].__name__})"
    if isinstance(obj, dict):
        return "= {" + ", ".join(map(repr, obj)) + "}: …"
    if isinstance(obj, types.ModuleType) and not callable(obj):      # a module exported whole (`ppddpm.likelihood`)
        return "module: " + ", ".join(getattr(obj, "__all__", ()))
    if not callable(obj):
        return f"= {obj!r}"
    signature = inspect.signature(obj)

    def written(annotation):
        return _Written(annotation) if isinstance(annotation, str) else annotation

    return str(signature.replace(
        parameters=[p.replace(annotation=written(p.annotation)) for p in signature.parameters.values()],
        return_annotation=written(signature.return_annotation)))


def render_api() -> str:
    """README's "Public API" block: every name of `ppddpm.__all__`, its signature and the module it
    lives in, grouped by module (tests/test_public_api.py checks the committed block is this)."""
    import ppddpm     # lazy: the measured tables above need no paddle

    rows = []
    for name in ppddpm.__all__:
        obj = getattr(ppddpm, name)
        home = getattr(obj, "__module__", None) if callable(obj) and not isinstance(obj, type(ppddpm)) else None
        home = home or (obj.__name__ if isinstance(obj, types.ModuleType) else f"ppddpm.{ppddpm._EXPORTS[name]}")
        rows.append((home, name, _signature(obj).replace("|", "\\|")))
    lines = ["| name | signature | lives in |", "|---|---|---|"]
    rows.sort(key=lambda row: (row[0], row[1].lower()))
    lines += [f"| `ppddpm.{name}` | `{signature}` | `{home}` |" for home, name, signature in rows]
    return "\n".join(lines)
