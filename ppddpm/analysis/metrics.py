"""Sample quality on digits, measured with a classifier instead of eyes.

A small scikit-learn MLP is trained on the real digits' train split (the same split the
bundled model was trained on); the held-out split is the real-data ceiling.

- confidence: mean top-class probability of the classifier on the samples (a sample that
  looks like one clear digit scores near 1);
- class entropy: entropy of the mean predicted class distribution, in nats (ln 10 = 2.303
  when all ten digits are equally represented), and the Inception-Score analogue
  exp(E_x KL(p(y|x) ‖ p(y))) (10 at best);
- Fréchet distance between Gaussians fitted to the classifier's hidden features of the
  samples and of the real train digits (an FID analogue; 0 at best; depends on n, so the
  ceiling is computed with the same n).

Samples at another resolution are area-resized to 8x8, the classifier's input.
"""
from __future__ import annotations

import functools
import json
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from ppddpm._io import atomic_path
from ppddpm._progress import wanted
from ppddpm.core import rng as _rng
from ppddpm.core.distributed import sharded, world
from ppddpm.errors import BadValue
from ppddpm.model.data import load_digits, resize01

HELD_OUT_DIGITS = 359         # the digits' test split: the real ceiling is scored on at most this many


@dataclass
class Scores:
    n: int
    confidence: float
    class_entropy: float
    inception_score: float
    frechet_distance: float

    def as_dict(self):
        return asdict(self)

    def against(self, real: "Scores") -> dict:
        """The goal's figures: confidence and Inception Score as shares of `real`'s, Fréchet distance
        as a multiple of `real`'s (real held-out vs real train digits, the same n)."""
        return {"confidence_share": self.confidence / real.confidence,
                "is_share": self.inception_score / real.inception_score,
                "fd_ratio": self.frechet_distance / real.frechet_distance}


@functools.lru_cache(maxsize=1)
def classifier():
    """(fitted MLPClassifier, held-out accuracy), trained on the digits' train split."""
    from sklearn.neural_network import MLPClassifier

    x_train, y_train = load_digits("train", 8, with_labels=True)
    x_test, y_test = load_digits("test", 8, with_labels=True)
    clf = MLPClassifier(hidden_layer_sizes=(64,), max_iter=600, random_state=0)
    clf.fit(_features_in(x_train), y_train)
    return clf, float(clf.score(_features_in(x_test), y_test))


def _features_in(images: np.ndarray) -> np.ndarray:
    """[N, 1, H, W] in [−1, 1] → [N, 64] in [0, 1] at 8x8 (area average)."""
    x = np.asarray(images, np.float64)
    if x.ndim != 4 or x.shape[1] != 1:
        raise BadValue(f"digit samples must be [N, 1, H, W] grayscale, got shape {x.shape}")
    h = x.shape[-1]
    if h != 8:
        if h % 8:
            x = resize01(((x + 1) / 2).astype(np.float32), 8)[:, :1] * 2 - 1
        else:
            f = h // 8
            x = x.reshape(x.shape[0], 1, 8, f, 8, f).mean(axis=(3, 5))
    return np.clip((x.reshape(len(x), -1) + 1) / 2, 0, 1)


def _hidden(clf, feats):
    return np.maximum(feats @ clf.coefs_[0] + clf.intercepts_[0], 0)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """‖μ_a − μ_b‖² + Tr(Σ_a + Σ_b − 2 (Σ_a Σ_b)^{1/2}) between Gaussians fitted to two feature sets."""
    return _frechet(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))


def _frechet(mu_a, cov_a, mu_b, cov_b) -> float:
    from scipy import linalg

    with warnings.catch_warnings():            # sqrtm of a near-singular product warns; the real part is used
        warnings.simplefilter("ignore")
        covmean = np.real(linalg.sqrtm(cov_a @ cov_b))
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * covmean))


EPS = 1e-12          # inside the logarithms: a class the classifier gives probability 0 counts as 1e-12


class ScoreTally:
    """`score` and `digit_coverage` of samples that arrive chunk by chunk (`add`), without keeping them.

    Every score is a function of sums over the samples, so the chunks add up to the scores of all
    the samples at once (up to float64 rounding, ~1e-15 relative): with p(y|x) the classifier's
    probabilities and p(y) = mean_x p(y|x),
        confidence       = mean_x max_y p(y|x)
        class entropy    = −Σ_y p(y) log p(y)
        Inception Score  = exp(mean_x KL(p(y|x) ‖ p(y))) = exp(mean_x Σ_y p log p − Σ_y p(y) log p(y))
        Fréchet distance from the mean and covariance of the hidden features, whose scatter matrices
                         are merged chunk by chunk (Chan, Golub & LeVeque's pairwise update).
    Per sample only the digit the classifier names is kept (one byte), for `coverage`."""

    def __init__(self):
        self.clf, _ = classifier()
        width = self.clf.coefs_[0].shape[1]
        self.n, self.confidence_sum, self.plogp_sum = 0, 0.0, 0.0
        self.p_sum = np.zeros(len(self.clf.classes_))
        self.mean, self.scatter = np.zeros(width), np.zeros((width, width))
        self.named = []

    def add(self, images: np.ndarray) -> "ScoreTally":
        """Count samples [N, 1, H, W] in [−1, 1] (the next ones in seed order)."""
        feats = _features_in(images)
        if not len(feats):
            return self
        p = self.clf.predict_proba(feats)
        self.confidence_sum += float(p.max(1).sum())
        self.p_sum += p.sum(0)
        self.plogp_sum += float((p * np.log(p + EPS)).sum())
        self.named.append(self.clf.predict(feats).astype(np.int8))
        hidden = _hidden(self.clf, feats)
        n, mean = len(hidden), hidden.mean(0)
        delta, total = mean - self.mean, self.n + n
        self.scatter += (hidden - mean).T @ (hidden - mean) + np.outer(delta, delta) * (self.n * n / total)
        self.mean += delta * (n / total)
        self.n = total
        return self

    def scores(self) -> Scores:
        if self.n < 2:
            raise BadValue("need at least 2 samples to score")
        marginal = self.p_sum / self.n
        marginal_entropy = float(-(marginal * np.log(marginal + EPS)).sum())
        real = _hidden(self.clf, _features_in(load_digits("train", 8)))
        return Scores(n=self.n, confidence=self.confidence_sum / self.n, class_entropy=marginal_entropy,
                      inception_score=float(np.exp(self.plogp_sum / self.n + marginal_entropy)),
                      frechet_distance=_frechet(self.mean, self.scatter * (1.0 / (self.n - 1)), real.mean(0),
                                                np.cov(real, rowvar=False)))

    def coverage(self, window: int = 64) -> dict:
        """`digit_coverage` of the samples added, in the order they were added."""
        named = np.concatenate(self.named) if self.named else np.zeros(0, np.int8)
        window = min(window, len(named))
        fewest = min(len(set(named[i:i + window].tolist())) for i in range(len(named) - window + 1))
        return {"window": window, "fewest": fewest, "counts": np.bincount(named, minlength=10).tolist()}


def score(images: np.ndarray) -> Scores:
    """Scores for samples [N, 1, H, W] in [−1, 1] (what the pipeline's last x_{t−1} holds)."""
    return ScoreTally().add(images).scores()


def digit_coverage(images: np.ndarray, window: int = 64) -> dict:
    """Which digits the classifier names, over consecutive samples: `fewest` is the smallest number of
    distinct digits in any `window` consecutive samples (10 when every window has all ten; with the
    samples in seed order, "every 64 consecutive seeds"), `counts` how often each digit 0…9 was named."""
    return ScoreTally().add(images).coverage(window)


def real_ceiling(n=None, resolution: int = 8, seed: int = 0) -> Scores:
    """The same scores for n real held-out digits at `resolution` (taken through the same
    resize to 8x8 as samples of a model at that resolution): what a perfect model would reach."""
    test = load_digits("test", resolution)
    n = len(test) if n is None else n
    if n > len(test):
        raise BadValue(f"n must be at most {len(test)} (the held-out digits), got {n}")
    pick = np.random.RandomState(seed).choice(len(test), n, replace=False)
    return score(test[pick])


def sample_images(pipe, n: int = 64, seed: int = 0, num_inference_steps: int = 1000, batch_size: int = 64,
                  progress=None):
    """n samples from `pipe` as [n, C, H, W] in [−1, 1] (the pipeline's output before display mapping);
    batch k is drawn with seed `seed + k·batch_size`. Under paddle.distributed the batches are split
    over the ranks (`ppddpm.core.distributed`), and every rank gets all n, bitwise as one process draws them."""
    return np.concatenate(list(sample_batches(pipe, n, seed, num_inference_steps, batch_size, progress)))


def sample_batches(pipe, n: int = 64, seed: int = 0, num_inference_steps: int = 1000, batch_size: int = 64,
                   progress=None, chunk: Optional[int] = None):
    """The samples of `sample_images`, bitwise, as they come: consecutive float32 arrays of `chunk`
    batches each (default: 4 per rank), so that many samples can be scored (`ScoreTally`) or written
    without holding them all. Under paddle.distributed each chunk's batches are split over the ranks
    and every rank gets every chunk."""
    from tqdm.auto import tqdm

    starts = list(range(0, n, batch_size))
    chunk = chunk or 4 * world()[1]
    bar = tqdm(total=len(starts), disable=not wanted(progress), desc=f"sampling {n} x {num_inference_steps} steps",
               unit="batch")

    def batch(start):
        with _rng.seeded(seed + start) as g:
            res = pipe(batch_size=min(batch_size, n - start), generator=g, num_inference_steps=num_inference_steps,
                       output_type="np")
        bar.update()
        images = res[0].images if isinstance(res, tuple) else res.images
        return np.asarray(images).transpose(0, 3, 1, 2) * 2 - 1

    with bar:
        for first in range(0, len(starts), chunk):
            done = sharded([[start] for start in starts[first:first + chunk]], lambda group: batch(group[0]),
                           "sampling")
            yield np.concatenate(done).astype(np.float32)


@dataclass
class EvalReport:
    """`ppddpm eval`'s result: the samples' scores beside those of real held-out digits (the ceiling),
    the classifier's own held-out accuracy, which digits it names, and how the samples were drawn
    (`steps` sampling steps, seeds `seed` … `seed + n − 1`)."""
    samples: Scores
    real: Scores
    coverage: dict
    classifier_accuracy: float
    steps: int
    seed: int

    def table(self) -> str:
        """The lines `ppddpm eval` prints."""
        mine, real, coverage = self.samples, self.real, self.coverage
        shares = mine.against(real)
        lines = [f"classifier: MLP on the digits' train split, held-out accuracy {self.classifier_accuracy:.3f}",
                 f"{'':16s} {'samples':>10s} {'real held-out':>14s}"]
        lines += [f"{key:16s} {getattr(mine, key):10.3f} {getattr(real, key):14.3f}"
                  for key in ("confidence", "class_entropy", "inception_score", "frechet_distance")]
        lines.append(f"n = {mine.n} samples ({self.steps} steps, seeds {self.seed}…{self.seed + mine.n - 1}) vs "
                     f"{real.n} real digits: confidence {shares['confidence_share']:.0%} of real, Inception Score "
                     f"{shares['is_share']:.0%} of real, Fréchet distance {shares['fd_ratio']:.2f} x real's")
        lines.append(f"digits named in every {coverage['window']} consecutive seeds: at least {coverage['fewest']} "
                     f"of 10; samples per digit 0-9: {' '.join(map(str, coverage['counts']))}")
        return "\n".join(lines)

    def as_dict(self) -> dict:
        return {"samples": self.samples.as_dict(), "real": self.real.as_dict(), "coverage": self.coverage,
                "classifier_accuracy": self.classifier_accuracy, "steps": self.steps, "seed": self.seed}

    def save_json(self, path) -> Path:
        """`as_dict()` as JSON, written atomically."""
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(self.as_dict(), indent=1))
        return Path(path)


def evaluate(samples, steps: int, seed: int, resolution: int = 8) -> EvalReport:
    """The report on samples [n, 1, H, W] in [−1, 1] — an array, or a `ScoreTally` they were added to —
    drawn with `steps` sampling steps from seeds `seed` … `seed + n − 1`, against min(n, HELD_OUT_DIGITS)
    real held-out digits at `resolution`."""
    tally = samples if isinstance(samples, ScoreTally) else ScoreTally().add(samples)
    mine = tally.scores()
    ceiling = real_ceiling(min(tally.n, HELD_OUT_DIGITS), resolution=resolution)
    _, accuracy = classifier()
    return EvalReport(mine, ceiling, tally.coverage(), accuracy, steps, seed)
