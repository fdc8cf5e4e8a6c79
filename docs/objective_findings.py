"""The article's two training questions at digits scale (issue 29), measured as the DDPM paper did on CIFAR-10.

    .venv/bin/python docs/objective_findings.py                # the study (hours on one core; resumable)
    .venv/bin/python docs/objective_findings.py --fast         # a smoke run in runs/objective-fast (minutes)

Five models trained at one budget and one seed on the digits' train split (`ppddpm.model.data`, 1438
images): ε + L_simple (the paper's choice), x_0 ("sample") + L_simple, v + L_simple, ε + L_vlb (the true
bound, fixed σ² = β̃_t), and improved DDPM's hybrid (L_simple + 0.001·L_vlb, learned variance). For each:
its loss curve and the float16 underflow record, the variational bound on the first N_BOUND held-out digits
(full T = 1000, bits/dim, 17 levels), the digit-classifier scores of `ppddpm eval` on N_EVAL samples at
1000 steps, and L_t against t. The bundled model's bound is measured on the same held-out digits.

Each run's results are kept in runs/objective/NAME/ as they are made, so an interrupted study resumes
where it stopped (training resumes from its checkpoint). At the end: docs/figures/objective.json (every
number), objective_vlb.png, objective_training_NAME.png, and README's block between
`<!-- objective-findings:start -->` and `<!-- objective-findings:end -->` (tests/test_readme.py checks that
README and the JSON agree). Not run in CI.
"""
import json
import re
import sys
import time
import warnings
from pathlib import Path

import numpy as np

if __name__ == "__main__":       # the study itself; README's block imports this module for `render`
    warnings.filterwarnings("ignore")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "docs"))
import ppddpm  # noqa: E402
from ppddpm.analysis import metrics  # noqa: E402
from ppddpm.model.data import load_digits  # noqa: E402
from ppddpm.model.training import TrainConfig, train  # noqa: E402
from ppddpm.pictures.objective import plot_training, plot_vlb  # noqa: E402

OUT = ROOT / "docs" / "figures"
JSON = OUT / "objective.json"
RUNS = {"eps-simple": ("epsilon", "simple"), "x0-simple": ("sample", "simple"), "v-simple": ("v_prediction", "simple"),
        "eps-vlb": ("epsilon", "vlb"), "hybrid": ("epsilon", "hybrid")}
LABELS = {"eps-simple": "ε + L_simple", "x0-simple": "x_0 + L_simple", "v-simple": "v + L_simple",
          "eps-vlb": "ε + L_vlb (fixed σ²)", "hybrid": "ε + L_hybrid (learned σ²)"}
BUDGET = dict(resolution=8, steps=1000, batch_size=64, lr=2e-3, warmup=100, seed=0, checkpoint_every=100,
              log_every=20)
N_BOUND, N_EVAL, LEVELS, SAMPLE_STEPS = 128, 128, 17, 1000
# the DDPM paper on CIFAR-10 (MATH.md): Table 2 (IS, FID) and Table 1 (NLL, bits/dim, test)
PAPER = {"eps-simple": "IS 9.46, FID 3.17; NLL ≤ 3.75", "x0-simple": "μ̃ + MSE: unstable (no number)",
         "v-simple": "— (Salimans & Ho 2022)", "eps-vlb": "IS 7.67, FID 13.51; NLL ≤ 3.70 (the bound, μ̃ or ε)",
         "hybrid": "improved DDPM: both the FID and the NLL"}


def _trained(name, folder, fast):
    """The run's pipeline: trained here, resumed from its checkpoint, or already done."""
    prediction_type, loss = RUNS[name]
    cfg = TrainConfig(output_dir=str(folder), prediction_type=prediction_type, loss=loss,
                      **dict(BUDGET, steps=20, checkpoint_every=10, log_every=5) if fast else BUDGET)
    record = folder / "train_losses.json"
    done = record.exists() and len(json.loads(record.read_text())["losses"]) == cfg.steps
    if not done:
        print(f"{name}: training {cfg.steps} steps", flush=True)
        train(cfg, resume=(folder / "checkpoint.safetensors").exists(), progress=False)
    pipe = ppddpm.load_pipeline(str(folder))
    pipe.set_progress_bar_config(disable=True)
    return pipe, json.loads(record.read_text())


def _cached(path, make):
    """`make()`'s JSON, kept at `path` so that a resumed study does not measure it again."""
    if path.exists():
        return json.loads(path.read_text())
    value = make()
    path.write_text(json.dumps(value))
    return value


def _bound(pipe, n, timesteps=None, label=""):
    images = load_digits("test", 8)[:n]
    report = ppddpm.likelihood.bpd(pipe, images, seed=0, levels=LEVELS, timesteps=timesteps, batch_size=n)
    report.model = label
    print(report.table(), flush=True)
    return report.as_dict()


def _quality(pipe, n, steps):
    tally = metrics.ScoreTally()
    for images in metrics.sample_batches(pipe, n=n, seed=0, num_inference_steps=steps, batch_size=64):
        tally.add(images)
    report = metrics.evaluate(tally, steps, 0)
    print(report.table(), flush=True)
    return report.as_dict()


def _curve(losses, points=100):
    """The loss curve as `points` means of consecutive steps (the JSON keeps a curve, not every step)."""
    losses = np.asarray(losses, np.float64)
    edges = np.linspace(0, len(losses), min(points, len(losses)) + 1).astype(int)
    return {"step": [int(b) for b in edges[1:]], "mean": [float(losses[a:b].mean()) for a, b in zip(edges, edges[1:])]}


def _underflow_summary(record):
    """Mean share over the logged steps, per part, format and kind (train_losses.json's "underflow")."""
    return {part: {fmt: {kind: float(np.mean(values)) for kind, values in kinds.items()}
                   for fmt, kinds in record[part].items()} for part in ("gradients", "loss_values")}


def run(name, root, fast):
    folder = root / name
    pipe, record = _trained(name, folder, fast)
    plot_training(record, save=(root if fast else OUT) / f"objective_training_{name}.png")
    n_bound, n_eval, steps = (16, 16, 50) if fast else (N_BOUND, N_EVAL, SAMPLE_STEPS)
    bound = _cached(folder / "bound.json", lambda: _bound(pipe, n_bound, 20 if fast else None, LABELS[name]))
    quality = _cached(folder / "quality.json", lambda: _quality(pipe, n_eval, steps))
    return {"name": name, "label": LABELS[name], "prediction_type": RUNS[name][0], "loss": RUNS[name][1],
            "paper": PAPER[name], "steps": len(record["losses"]), "seconds": record.get("seconds_total"),
            "loss_curve": _curve(record["losses"]), "final_loss": float(np.mean(record["losses"][-50:])),
            "underflow": _underflow_summary(record["underflow"]), "scale": record["underflow"]["scale"],
            "bound": _bound_summary(bound), "quality": quality}


def _bound_summary(bound):
    """What the table and the figure need from a BoundReport's dict (not every image's terms)."""
    keep = ("model", "levels", "num_images", "num_timesteps", "timesteps", "estimated", "mean_bpd", "standard_error",
            "image_error", "timestep_error", "prediction_type", "variance_type", "mean_terms", "weights", "prior",
            "seconds")
    out = {k: bound[k] for k in keep}
    for k in ("mean_terms", "weights", "prior"):      # curves for the figure: 4 digits are plenty
        out[k] = [None if v is None else float(f"{v:.4g}") for v in out[k]]
    if not out["estimated"]:
        out["timesteps"] = f"all {out['num_timesteps']}"
    terms = np.array([np.nan if v is None else v for v in bound["mean_terms"]])
    out["decoder"] = float(terms[0])
    out["share_t_below_10"] = float(np.nansum(terms[:10]) / bound["mean_bpd"])
    out["share_t_below_100"] = float(np.nansum(terms[:100]) / bound["mean_bpd"])
    return out


def decoder_cdf_difference(pipe, n):
    """L_0 of `pipe` with the exact normal CDF (what ppddpm computes) and with the TF code's tanh approximation,
    on the same x_1 (float64 reference, bits/dim): the size of the choice."""
    import paddle

    from ppddpm import reference as ref

    s64 = ref.Schedule.from_scheduler(pipe.scheduler)
    x0 = load_digits("test", 8)[:n]
    noise = np.random.default_rng([0, 0]).standard_normal(x0.shape, dtype=np.float32)
    x1 = ref.q_sample(s64, x0.astype(np.float64), np.zeros(n, int), noise).astype(np.float32)
    with paddle.no_grad():
        out = pipe.unet(paddle.to_tensor(x1), paddle.to_tensor(np.zeros(n, "int64"))).sample.numpy()
    exact, _ = ref.vb_terms_bpd(s64, out, x0, x1, 0, levels=LEVELS)
    tanh, _ = ref.vb_terms_bpd(s64, out, x0, x1, 0, levels=LEVELS, cdf="tanh")
    return {"exact": float(exact.mean()), "tanh": float(tanh.mean()), "max_abs_difference":
            float(np.abs(exact - tanh).max())}


def bundled(root, fast):
    pipe = ppddpm.load_pipeline()
    n = 16 if fast else N_BOUND
    bound = _cached(root / "bundled_bound.json", lambda: _bound(pipe, n, 20 if fast else None, "bundled ddpm-digits-8"))
    return {"bound": _bound_summary(bound), "split": "held-out (test split, never trained on)",
            "decoder_cdf": decoder_cdf_difference(pipe, n)}


def main(fast=False, names=None):
    root = ROOT / "runs" / ("objective-fast" if fast else "objective")
    root.mkdir(parents=True, exist_ok=True)
    started = time.time()
    data = {"budget": BUDGET, "n_bound": N_BOUND, "n_eval": N_EVAL, "levels": LEVELS, "sample_steps": SAMPLE_STEPS,
            "bundled": bundled(root, fast), "runs": []}
    for name in names or RUNS:
        data["runs"].append(run(name, root, fast))
        print(f"{name} done after {time.time() - started:.0f} s", flush=True)
    data["seconds_this_invocation"] = time.time() - started
    figure = {r["label"]: r["bound"] for r in data["runs"]}
    figure["bundled (5500 steps)"] = data["bundled"]["bound"]
    plot_vlb(figure, save=(root if fast else OUT) / "objective_vlb.png")
    if not fast and not names:
        JSON.write_text(dumps(data))
        from readme_blocks import fill

        fill("objective-findings", render(data), "docs/objective_findings.py from docs/figures/objective.json")
    print(render(data))
    return data


def dumps(data) -> str:
    """JSON indented by key, each list of numbers on one line (the curves are long)."""
    text = json.dumps(data, indent=1)
    return re.sub(r"\[\s*([-0-9eE.,\snul]+?)\s*\]", lambda m: "[" + re.sub(r"\s+", " ", m.group(1)) + "]", text)


def render(data) -> str:
    """README's objective table, from the JSON alone (docs/readme_blocks.py defines the units)."""
    b = data["budget"]
    lines = [f"Each model: `ppddpm train --prediction-type P --loss L --steps {b['steps']} --batch-size "
             f"{b['batch_size']} --seed {b['seed']}` on the digits' train split; bound on the first "
             f"{data['n_bound']} held-out digits ({data['levels']} levels, all T = 1000 terms, mean ± standard "
             f"error); scores of `ppddpm eval` on {data['n_eval']} samples at {data['sample_steps']} steps.", "",
             "| model | final loss | bound, bits/dim | L_0 | share in t < 10 | confidence | class entropy | IS | "
             "Fréchet | the paper (CIFAR-10) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in data["runs"]:
        bd, s = r["bound"], r["quality"]["samples"]
        lines.append(f"| {r['label']} | {r['final_loss']:.4g} | {bd['mean_bpd']:.3f} ± {bd['standard_error']:.3f} | "
                     f"{bd['decoder']:.3f} | {bd['share_t_below_10']:.0%} | {s['confidence']:.3f} | "
                     f"{s['class_entropy']:.3f} | {s['inception_score']:.2f} | {s['frechet_distance']:.2f} | "
                     f"{r['paper']} |")
    real = data["runs"][0]["quality"]["real"] if data["runs"] else None
    bb = data["bundled"]["bound"]
    if real:
        lines.append(f"| real held-out digits | | | | | {real['confidence']:.3f} | {real['class_entropy']:.3f} | "
                     f"{real['inception_score']:.2f} | {real['frechet_distance']:.2f} | |")
    lines += ["", f"The bundled model (ε + L_simple, 5500 steps) on the same {bb['num_images']} held-out digits: "
                  f"**{bb['mean_bpd']:.3f} ± {bb['standard_error']:.3f} bits/dim**, {bb['share_t_below_10']:.0%} of "
                  f"it in t < 10 (a uniform code of 17 levels costs log2 17 = 4.09). Its decoder term L_0 with the "
                  f"TF code's tanh approximation of the normal CDF instead of the exact one differs by at most "
                  f"{data['bundled']['decoder_cdf']['max_abs_difference']:.1e} bits/dim per image."]
    return "\n".join(lines + _underflow_rows(data))


def _underflow_rows(data) -> list:
    """The low-precision record: shares of gradient entries and loss values a float16 cast would make subnormal
    or zero, mean over the logged steps, without and with loss scaling."""
    scale = data["runs"][0]["scale"] if data["runs"] else 2.0 ** 16
    lines = ["", f"What a float16 cast would do to each run (every {data['budget']['log_every']} steps of training on "
                 f"this CPU, where paddle's auto_cast computes float32; mean over the logged steps; × {scale:g}: "
                 f"with loss scaling):", "",
             "| model | gradient entries subnormal | … zero | subnormal × scale | zero × scale | loss values "
             "subnormal | … zero | loss values overflowing × scale | bfloat16: any |",
             "|---|---|---|---|---|---|---|---|---|"]
    pct = lambda v: f"{100 * v:.3g} %"      # noqa: E731
    for r in data["runs"]:
        g, v = r["underflow"]["gradients"], r["underflow"]["loss_values"]
        g16, v16 = g["float16"], v["float16"]
        bf = max(max(part["bfloat16"].values()) for part in (g, v))
        lines.append(f"| {r['label']} | {pct(g16['subnormal'])} | {pct(g16['zero'])} | {pct(g16['subnormal_scaled'])} "
                     f"| {pct(g16['zero_scaled'])} | {pct(v16['subnormal'])} | {pct(v16['zero'])} | "
                     f"{pct(v16['overflow_scaled'])} | {pct(bf)} |")
    return lines


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    main(fast="--fast" in sys.argv, names=args or None)
