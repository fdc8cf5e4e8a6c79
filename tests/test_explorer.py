"""The explorer (ppddpm view / ppddpm.pictures.explorer.explore) in a real browser: Debian's chromium,
driven headless by selenium through chromium-driver (.ci/run installs both); and what its page holds."""
import os
import shutil

import numpy as np
import pytest

import ppddpm
from ppddpm.pictures.explorer import explore

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture
def runs(pipe):
    a = ppddpm.sample_trajectory(pipe, seed=5, num_inference_steps=30, fields="all", batch_size=2)
    with ppddpm.patch_step(pipe.scheduler, "direct"):
        b = ppddpm.sample_trajectory(pipe, seed=5, num_inference_steps=30, fields="all", batch_size=2)
    return a, b


@pytest.fixture
def browser():
    if not (CHROMIUM and DRIVER):
        if os.environ.get("CI"):
            pytest.fail("chromium and chromium-driver are missing; .ci/run installs them with apt")
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
    os.environ.setdefault("SE_OFFLINE", "true")               # never let Selenium Manager fetch a driver
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


def test_the_page_is_one_offline_file(runs, tmp_path):
    a, b = runs
    page = explore(a, other=b).save(tmp_path / "view.html")
    text = page.read_text()
    assert "http://" not in text and "https://" not in text and "<script src" not in text    # nothing fetched
    assert "8-bit images" in text                                                             # quantisation stated
    assert 'iframe srcdoc="' in explore(a)._repr_html_()                                      # inline in notebooks


def test_scrubbing_changes_t_numbers_and_pixels(runs, tmp_path, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    a, b = runs
    page = explore(a, other=b).save(tmp_path / "view.html")
    browser.get(page.as_uri())
    state = lambda: (browser.find_element(By.ID, "tval").text, browser.find_element(By.ID, "numbers").text,  # noqa
                     browser.find_element(By.ID, "img-prev_sample").get_attribute("src"),
                     browser.find_element(By.ID, "cursor").get_attribute("x1"))
    t0, numbers0, pixels0, cursor0 = state()
    assert t0 == str(int(a.timesteps[0])) and "ᾱ_t (eq. 4)" in numbers0 and "(eq. 7)" in numbers0
    body = browser.find_element(By.TAG_NAME, "body")
    for _ in range(5):
        body.send_keys(Keys.ARROW_RIGHT)
    t5, numbers5, pixels5, cursor5 = state()
    assert t5 == str(int(a.timesteps[5])) and numbers5 != numbers0 and pixels5 != pixels0 and cursor5 != cursor0
    browser.execute_script("const s = document.getElementById('slider'); s.value = s.max;"
                           "s.dispatchEvent(new Event('input'));")
    assert state()[0] == "0"
    before = browser.find_element(By.ID, "img-sample").get_attribute("src")
    browser.find_element(By.CSS_SELECTOR, "#sample option[value='1']").click()        # the batch's second sample
    assert browser.find_element(By.ID, "img-sample").get_attribute("src") != before
    shot = tmp_path / "explorer.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000


def test_size_limits(pipe, tmp_path):
    """A 1000-step 16² run (all fields) stays ≤ 5 MB; a 256² run recorded every 10 steps ≤ 40 MB
    (a stand-in trajectory of the right shape: the page's size depends on the frames, not the model)."""
    from ppddpm.storage.trajectory import Trajectory

    rng = np.random.RandomState(0)
    n, shape = 100, (1, 3, 256, 256)
    x0 = np.clip(rng.randn(*shape) * 0.5, -1, 1)
    frac = np.linspace(1, 0, n)[:, None, None, None, None]
    noise = rng.randn(n, *shape).astype(np.float32)
    xt = (np.sqrt(1 - frac ** 2) * x0 + frac * noise).astype(np.float32)
    fields = {"prev_sample": xt, "pred_original_sample": np.clip(xt * 1.2, -1, 1), "sample": xt,
              "model_output": noise, "pred_original_sample_unclipped": xt * 1.2, "noise": noise}
    big = Trajectory(np.arange(990, -1, -10), fields, np.full(n, 0.1), np.zeros(n), {"num_inference_steps": 100})
    assert len(explore(big)) <= 40 * 2 ** 20
    small = ppddpm.sample_trajectory(pipe, seed=1, num_inference_steps=1000, fields="all")
    small.meta["note"] = "8x8"
    assert len(explore(small)) <= 5 * 2 ** 20


HOSTILE = ('<img src=x onerror="window.__pwned=1"><b data-pwned=1>b</b></script><script>window.__pwned=2</script>'
           '"\'><svg onload="window.__pwned=3"><i data-pwned=2>')


def hostile_run(variant, n=3):
    """A Trajectory made by hand whose every label is the payload (meta, stages)."""
    from ppddpm.storage.trajectory import Trajectory

    rng = np.random.RandomState(0)
    frames = {f: rng.randn(n, 1, 1, 4, 4).astype(np.float32) for f in ("prev_sample", "pred_original_sample")}
    meta = {"variant": variant, "seed": HOSTILE, "scheduler": HOSTILE, "num_inference_steps": n}
    return Trajectory(np.arange(n)[::-1] * 10, frames, np.full(n, 0.1), np.zeros(n), meta, stages=[HOSTILE] * n)


def test_hostile_labels_from_every_input_stay_text(tmp_path, browser):
    """Labels from the run's meta and stages, from --with OTHER's variant and from an ab.json's
    variants / reference / mode are shown as text: the payload's script never runs (no global set)
    and its markup never becomes elements, yet its characters are on the page."""
    import json

    from selenium.webdriver.common.by import By

    run, other = hostile_run(HOSTILE), hostile_run("other " + HOSTILE)
    ab = tmp_path / "ab.json"                      # written by hand: the fields ppddpm view reads
    ab.write_text(json.dumps({"variants": [HOSTILE, HOSTILE], "reference": HOSTILE, "mode": HOSTILE,
                              "timesteps": [20, 10, 0], "per_variant": {HOSTILE: {"max_abs_prev": [[1e-3]] * 3}},
                              "bound": [[1e-2]] * 3}))
    for name, page in (("with", explore(run, other=other)), ("ab", explore(run, ab=ab))):
        browser.get(page.save(tmp_path / f"{name}.html").as_uri())
        body = browser.find_element(By.TAG_NAME, "body")
        body.send_keys("\ue014")                   # → : the next step's stage label is drawn too
        assert browser.execute_script("return window.__pwned") is None, name
        assert browser.execute_script("return document.querySelectorAll('[data-pwned]').length") == 0, name
        shown = browser.execute_script("return document.body.textContent + document.title")
        assert shown.count('<b data-pwned=1>') >= 3, name          # title, stage, curve label: as text


def payload(view) -> dict:
    """The data the page's script runs on, read back out of the page."""
    import json

    return json.loads(view.html.split("const D = ", 1)[1].split(";\nconst n = ", 1)[0])


@pytest.mark.parametrize("family, kwargs, shown, not_shown", [
    ("ddim", {"eta": 1.0}, ["ᾱ_t (eq. 4)", "σ_t(η) = η·√((1−ᾱ_prev)/(1−ᾱ_t)·(1−ᾱ_t/ᾱ_prev)), std of the added noise "
                                           "(eq. 16)"], ["β̃_t (eq. 7)", "σ of x_t"]),
    ("euler-ancestral", {}, ["σ of x_t, √((1−ᾱ)/ᾱ): the model sees x_t/√(σ²+1)", "σ of the x_{t−1} the step makes"],
     ["β̃_t (eq. 7)", "ᾱ_t (eq. 4)"]),
    ("dpmsolver-multistep", {}, ["ᾱ_t (eq. 4)", "std of the SDE solvers' noise (DPM-Solver++ §5; 0 for the ODE "
                                                "solvers)"], ["β̃_t (eq. 7)", "σ of x_t"]),
])
def test_the_explorer_lists_each_samplers_own_numbers(pipe, family, kwargs, shown, not_shown):
    """DDPM's β̃_t and eq. (7) belong to DDPM's page (the browser test above); another sampler's page lists
    what that sampler has: ᾱ and σ_t(η) for DDIM, the noise level σ for Euler, ᾱ for DPM-Solver."""
    run = ppddpm.sample_trajectory(ppddpm.with_sampler(pipe, family), seed=1, num_inference_steps=4,
                                   pipe_kwargs=kwargs)
    labels = [row[0] for row in payload(explore(run))["numbers"][0]["rows"]]
    assert set(shown) <= set(labels) and not set(not_shown) & set(labels), labels


def test_the_page_says_its_size_and_when_two_runs_are_identical(runs, tmp_path, capsys):
    from ppddpm.cli.main import main

    a, _ = runs
    view = explore(a, other=a)
    kib = len(view) / 1024
    assert kib < 1024 and view.size == f"{round(kib)} KB"                 # 0.4 said "(0.0 MB)" for such a page
    assert payload(view)["side"]["difference_label"] == "|difference|: identical, 0 at every pixel of every step"
    assert main(["view", str(a.save(tmp_path / "a.npz")), "--out", str(tmp_path / "a.html")]) == 0
    assert f"({explore(a).size}, self-contained" in capsys.readouterr().out
