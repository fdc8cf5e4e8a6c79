"""Pictures of the training objective: where the bound's bits go (`plot_vlb`), and a training run's loss beside
what float16 / bfloat16 would flush (`plot_training`). Like `ppddpm.pictures.plotting`, each returns a
matplotlib Figure and takes `save=` (a PNG path)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import numpy as np

from ppddpm.errors import BadValue, regular_file
from ppddpm.pictures.plotting import _figure, _save


def _as_dict(report) -> dict:
    """A `BoundReport`, its `as_dict()`, or the path of its `to_json` file, as the dict."""
    if isinstance(report, (str, Path)):
        return json.loads(regular_file(report, "bound report").read_text())
    return report if isinstance(report, Mapping) else report.as_dict()


def _reports(report) -> dict:
    """{label: report dict}: one report (labelled by its model), or a mapping of labels to reports."""
    if isinstance(report, Mapping) and "mean_terms" not in report:
        return {label: _as_dict(r) for label, r in report.items()}
    data = _as_dict(report)
    return {data.get("model") or "bound": data}


def _floats(values) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], np.float64)


def plot_vlb(report, save=None):
    """Where the bound's bits go: L_t against t (log scale; 0-based t, L_0 the decoder of eq. 13, the prior L_T
    as a marker at t = T), the cumulative share of the bits from t = 0 up, and the weight of eq. (12) that
    L_simple (eq. 14) drops. `report`: a `BoundReport` (or its dict / JSON file), or {label: report}."""
    reports = _reports(report)
    fig = _figure(13, 3.6)
    ax_terms, ax_share, ax_weight = (fig.add_subplot(1, 3, k) for k in (1, 2, 3))
    for label, r in reports.items():
        terms, weights = _floats(r["mean_terms"]), _floats(r["weights"])
        T = len(terms)
        drawn = np.arange(T) if isinstance(r["timesteps"], str) else np.asarray(r["timesteps"], int)   # "all T"
        scale = T / len(drawn)
        prior = float(np.mean(_floats(r["prior"])))
        shown = np.maximum(terms[drawn], 1e-12)
        line, = ax_terms.semilogy(drawn, shown, lw=1 if len(drawn) == T else 0, marker="" if len(drawn) == T else ".",
                                  label=f"{label}: {r['mean_bpd']:.3f} bits/dim")
        ax_terms.semilogy([T], [max(prior, 1e-12)], marker="*", color=line.get_color(), ls="")
        cumulative = np.cumsum(terms[drawn]) * scale / r["mean_bpd"]
        ax_share.plot(np.append(drawn, T), np.append(cumulative, 1.0), color=line.get_color(),
                      drawstyle="steps-post", label=label)
        ax_weight.semilogy(np.arange(T), weights, color=line.get_color(),
                           label=f"{label} ({r['prediction_type']})")
    ax_terms.set(xlabel="t (0-based; L_0 = decoder, ★ = prior L_T)", ylabel="L_t, bits/dim",
                 title="the bound, term by term")
    ax_share.set(xlabel="t", ylabel="share of the bound in L_0..L_t", title="where the bits go", ylim=(0, 1.02))
    for ax in (ax_terms, ax_share, ax_weight):                # the small t, where the bits are, spread out
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xlim(0, 1.1 * T)
    ax_weight.set(xlabel="t", ylabel="bits/dim per unit of target MSE",
                  title="eq. (12)'s weight, which L_simple drops")
    for ax in (ax_terms, ax_share, ax_weight):
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, save)


def _training_record(run) -> dict:
    """train_losses.json of a run: its dict, its path, or the folder of the run."""
    if isinstance(run, Mapping):
        return dict(run)
    path = Path(run)
    path = path / "train_losses.json" if path.is_dir() else path
    return json.loads(regular_file(path, "train_losses.json").read_text())


def plot_training(run, smooth: int = 25, save=None):
    """A training run's loss curve beside the share of its gradient entries and loss values that a cast to
    float16 would flush to zero or make subnormal, without and with loss scaling (and bfloat16's, where not 0)
    — the article's "MSE too small for low precision", put to numbers. `run`: a run's folder, its
    train_losses.json or that file's dict."""
    data = _training_record(run)
    record = data.get("underflow")
    if not record or not record.get("steps"):
        raise BadValue("this run's train_losses.json has no underflow record (trained by ppddpm ≤ 0.4, or with no "
                       "logged step); train again to record it")
    fig = _figure(12, 3.4)
    ax_loss, ax_grad, ax_values = (fig.add_subplot(1, 3, k) for k in (1, 2, 3))
    losses = np.asarray(data["losses"], np.float64)
    ax_loss.semilogy(losses, lw=0.4, alpha=0.4)
    if len(losses) > 2 * smooth:
        ax_loss.semilogy(np.arange(smooth - 1, len(losses)), np.convolve(losses, np.ones(smooth) / smooth, "valid"))
    cfg = data.get("config", {})
    ax_loss.set(xlabel="optimisation step", ylabel="loss", title=f"loss: {cfg.get('loss', 'simple')}, target "
                f"{cfg.get('prediction_type', 'epsilon')}, {cfg.get('precision', 'float32')}")
    steps = np.asarray(record["steps"])
    for ax, part, what in ((ax_grad, "gradients", "gradient entries"), (ax_values, "loss_values", "loss values")):
        for fmt, style in (("float16", "-"), ("bfloat16", ":")):
            shares = record[part][fmt]
            for kind, suffix, colour in (("zero", "", "C3"), ("subnormal", "", "C1"), ("zero", "_scaled", "C4"),
                                         ("subnormal", "_scaled", "C2"), ("overflow", "_scaled", "C0")):
                values = np.asarray(shares[kind + suffix], np.float64)
                if fmt == "bfloat16" and not values.any():
                    continue
                label = f"{fmt} {kind}" + (f" (x {record['scale']:g})" if suffix else "")
                ax.plot(steps, np.maximum(values, 1e-7), style, color=colour, label=label, lw=1)
        ax.set_yscale("log")
        ax.set(xlabel="optimisation step", ylabel="share (floored at 1e-7)", title=f"{what} lost in a 16-bit cast")
        ax.legend(fontsize=6)
    fig.tight_layout()
    return _save(fig, save)
