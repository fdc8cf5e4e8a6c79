"""The model ppddpm ships: loads offline with plain ppdiffusers, samples digits, documented."""
import json

import numpy as np
import pytest
from ppdiffusers import DDPMPipeline

import ppddpm
from ppddpm.analysis import metrics
from ppddpm.model.loading import BUNDLED_DIR, PipelineLoadError


def test_bundled_model_loads_offline_and_is_small():
    pipe = ppddpm.load_pipeline()
    assert isinstance(pipe, DDPMPipeline) and pipe.unet.config.sample_size == 8      # the digits' own resolution
    size = sum(p.stat().st_size for p in BUNDLED_DIR.rglob("*") if p.is_file())
    assert size <= 5 * 2 ** 20
    assert DDPMPipeline.from_pretrained(str(BUNDLED_DIR)).scheduler.config.num_train_timesteps == 1000
    record = json.loads((BUNDLED_DIR / "train_losses.json").read_text())
    assert len(record["losses"]) == record["config"]["stop_at"] == 5500      # of a 10000-step schedule
    assert record["config"]["steps"] == 10000
    assert (BUNDLED_DIR / "TRAINING.md").read_text().count("ppddpm train") >= 1


def test_bundled_model_samples_look_like_digits():
    """16 samples, 1000 steps: the classifier's confidence reaches ≥ 90% of 16 real digits'.

    At n = 256 (README) it is 97% of real (one sample's confidence has sd 0.083, so 16 samples'
    mean has se 0.021 and the floor sits ~4 se below; over the 16 windows of 16 seeds in 0–255 the
    lowest is 0.92 vs the floor's 0.89)."""
    pipe = ppddpm.load_pipeline()
    x = metrics.sample_images(pipe, n=16, seed=123, num_inference_steps=1000, batch_size=16)
    mine, real = metrics.score(x), metrics.real_ceiling(16, resolution=8)
    assert mine.confidence >= 0.9 * real.confidence, (mine, real)
    assert mine.class_entropy > 1.5             # several different digits, not one


def test_metrics_separate_noise_from_digits():
    clf, accuracy = metrics.classifier()
    assert accuracy > 0.95
    real = metrics.real_ceiling()
    noise = metrics.score(np.random.RandomState(0).uniform(-1, 1, (64, 1, 16, 16)))
    assert real.frechet_distance < 2 < 20 < noise.frechet_distance
    assert noise.class_entropy < 0.5 < 2.0 < real.class_entropy


@pytest.mark.parametrize("name,message", [
    ("google/ddpm-celebahq-256", "could not load 'google/ddpm-celebahq-256': the model hubs (ppdiffusers, Hugging "
                                 "Face) are not reachable from here (no network)"),
    ("./not/here", "no pipeline directory at './not/here'"),
])
def test_unreachable_models_give_a_clear_error(name, message):
    with pytest.raises(PipelineLoadError) as info:
        ppddpm.load_pipeline(name)
    text = str(info.value)
    assert message in text
    if name.startswith("google"):       # short, one line, and says what to do offline
        assert "save_pretrained(DIR)" in text and "load_pipeline()" in text
        assert len(text) < 400 and "\n" not in text and "model_index.json" not in text


def test_a_directory_that_is_not_a_pipeline(tmp_path):
    with pytest.raises(PipelineLoadError, match="not a saved pipeline"):
        ppddpm.load_pipeline(tmp_path)


def test_recording_pipeline_class_through_load_pipeline():
    pipe = ppddpm.load_pipeline(pipeline_class=ppddpm.RecordingDDPMPipeline)
    out = pipe(seed=777, num_inference_steps=20)
    assert len(out[1]) == 20 and out[0].images[0].size == (8, 8)



def test_digit_coverage_counts_distinct_digits_per_window_of_consecutive_seeds():
    """Three real digits of each class, one the classifier names correctly per class: interleaved
    0…9,0…9,0…9 every window of 10 holds all ten and every window of 5 five; sorted 0,0,0,1,1,1,…
    the best-aligned window of 10 holds only four (3 + 3 + 3 + 1)."""
    from ppddpm.model.data import load_digits

    x, y = load_digits("test", 8, with_labels=True)
    named = metrics.classifier()[0].predict(metrics._features_in(x))
    one = [x[np.nonzero((y == d) & (named == d))[0][0]] for d in range(10)]
    interleaved, by_digit = np.stack(one * 3), np.stack([im for im in one for _ in range(3)])
    assert metrics.digit_coverage(interleaved, window=10) == {"window": 10, "fewest": 10, "counts": [3] * 10}
    assert metrics.digit_coverage(interleaved, window=5)["fewest"] == 5
    assert metrics.digit_coverage(by_digit, window=10)["fewest"] == 4
    assert metrics.digit_coverage(by_digit[:6], window=64) == {"window": 6, "fewest": 2, "counts": [3, 3] + [0] * 8}
