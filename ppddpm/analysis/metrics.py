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
from dataclasses import asdict, dataclass

import numpy as np
from ppddpm.errors import BadValue


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

    from ppddpm.model.data import load_digits

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
            from ppddpm.model.data import resize01

            x = resize01(((x + 1) / 2).astype(np.float32), 8)[:, :1] * 2 - 1
        else:
            f = h // 8
            x = x.reshape(x.shape[0], 1, 8, f, 8, f).mean(axis=(3, 5))
    return np.clip((x.reshape(len(x), -1) + 1) / 2, 0, 1)


def _hidden(clf, feats):
    return np.maximum(feats @ clf.coefs_[0] + clf.intercepts_[0], 0)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """‖μ_a − μ_b‖² + Tr(Σ_a + Σ_b − 2 (Σ_a Σ_b)^{1/2}) between Gaussians fitted to two feature sets."""
    import warnings

    from scipy import linalg

    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    with warnings.catch_warnings():            # sqrtm of a near-singular product warns; the real part is used
        warnings.simplefilter("ignore")
        covmean = np.real(linalg.sqrtm(cov_a @ cov_b))
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * covmean))


def score(images: np.ndarray) -> Scores:
    """Scores for samples [N, 1, H, W] in [−1, 1] (what the pipeline's last x_{t−1} holds)."""
    from ppddpm.model.data import load_digits

    clf, _ = classifier()
    feats = _features_in(images)
    if len(feats) < 2:
        raise BadValue("need at least 2 samples to score")
    p = clf.predict_proba(feats)
    marginal = p.mean(0)
    eps = 1e-12
    kl = (p * (np.log(p + eps) - np.log(marginal + eps))).sum(1)
    real = _hidden(clf, _features_in(load_digits("train", 8)))
    return Scores(n=len(feats), confidence=float(p.max(1).mean()),
                  class_entropy=float(-(marginal * np.log(marginal + eps)).sum()),
                  inception_score=float(np.exp(kl.mean())),
                  frechet_distance=frechet_distance(_hidden(clf, feats), real))


def digit_coverage(images: np.ndarray, window: int = 64) -> dict:
    """Which digits the classifier names, over consecutive samples: `fewest` is the smallest number of
    distinct digits in any `window` consecutive samples (10 when every window has all ten; with the
    samples in seed order, "every 64 consecutive seeds"), `counts` how often each digit 0…9 was named."""
    clf, _ = classifier()
    named = clf.predict(_features_in(images))
    window = min(window, len(named))
    fewest = min(len(set(named[i:i + window].tolist())) for i in range(len(named) - window + 1))
    return {"window": window, "fewest": fewest, "counts": np.bincount(named, minlength=10).tolist()}


def real_ceiling(n=None, resolution: int = 8, seed: int = 0) -> Scores:
    """The same scores for n real held-out digits at `resolution` (taken through the same
    resize to 8x8 as samples of a model at that resolution): what a perfect model would reach."""
    from ppddpm.model.data import load_digits

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
    from tqdm.auto import tqdm

    from ppddpm.core import rng as _rng
    from ppddpm._progress import wanted
    from ppddpm.core.distributed import sharded

    starts = list(range(0, n, batch_size))
    bar = tqdm(total=len(starts), disable=not wanted(progress), desc=f"sampling {n} x {num_inference_steps} steps",
               unit="batch")

    def batch(start):
        g = _rng.make_generator(seed + start)
        try:
            res = pipe(batch_size=min(batch_size, n - start), generator=g, num_inference_steps=num_inference_steps,
                       output_type="np")
        finally:
            _rng.release_generator(g)
        bar.update()
        images = res[0].images if isinstance(res, tuple) else res.images
        return np.asarray(images).transpose(0, 3, 1, 2) * 2 - 1

    with bar:
        out = sharded([[start] for start in starts], lambda group: batch(group[0]), "sampling")
    return np.concatenate(out).astype(np.float32)
