"""ppddpm.pictures.plotting on real recorded trajectories: files written, layout as specified."""
import numpy as np
import pytest
from PIL import Image

import ppddpm
from ppddpm.pictures import plotting as P


@pytest.fixture(scope="module")
def traj(request):
    from ppdiffusers import DDPMPipeline

    from ppddpm.model.builders import ddpm_scheduler

    unet = request.getfixturevalue("unet")
    pipe = DDPMPipeline(unet=unet, scheduler=ddpm_scheduler())
    return ppddpm.sample_trajectory(pipe, seed=777, num_inference_steps=1000, every=50, batch_size=2)


def image_axes(fig):
    return [ax for ax in fig.axes if ax.images and ax.axison]


def test_plot_grid_is_the_articles_figure(traj, tmp_path):
    fig = P.plot_grid(traj, "prev_sample", every=50, ncols=10, index=0, save=tmp_path / "g.png")
    tiles = image_axes(fig)
    assert len(tiles) == 20                                        # 1000 steps / 50
    assert [ax.get_title() for ax in tiles][:3] == ["t=950", "t=900", "t=850"] and tiles[-1].get_title() == "t=0"
    assert Image.open(tmp_path / "g.png").size[0] > 500
    both = P.plot_grid(traj, "pred_original_sample", every=100)    # batch of 2: a block of rows each
    assert len(image_axes(both)) == 20 and "x̂_0" in both._suptitle.get_text()


def test_plot_grid_refuses_an_every_the_recording_cannot_give(traj):
    with pytest.raises(ValueError, match="recorded every 50 steps; choose every as a multiple of 50"):
        P.plot_grid(traj, every=30)
    with pytest.raises(ValueError, match="index must be in"):
        P.plot_grid(traj, index=5)


def test_plot_trajectory_aligns_x_t_and_x0(traj, tmp_path):
    fig = P.plot_trajectory(traj, every=50, save=tmp_path / "t.png")
    assert len(image_axes(fig)) == 40
    labels = [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()]
    assert labels == ["x_t", "x̂_0", "x_t", "x̂_0"]
    assert (tmp_path / "t.png").exists()


def test_plot_ab_shows_differences_bound_and_finals(unet, tmp_path):
    from ppdiffusers import DDPMPipeline

    from ppddpm.model.builders import ddpm_scheduler

    pipe = DDPMPipeline(unet=unet, scheduler=ddpm_scheduler())
    report = ppddpm.compare(pipe, ["posterior", "direct"], seed=1, num_inference_steps=50, mode="free",
                            clip_sample=True)
    fig = P.plot_ab(report, save=tmp_path / "ab.png")
    main = fig.axes[0]
    assert main.get_yscale() == "log"
    assert [line.get_label() for line in main.get_lines()] == ["max |Δ x_{t−1}|", "max |Δ x̂_0|",
                                                               "float32 rounding bound"]
    titles = [ax.get_title() for ax in fig.axes]
    assert "final: posterior" in titles and "final: direct" in titles
    assert any(t.startswith("|Δ| in [−1, 1] units (max ") for t in titles)      # the table's final max|Δ|
    assert Image.open(tmp_path / "ab.png").size[1] > 300


def test_plot_forward_on_a_real_digit(tmp_path):
    from ppddpm.model.builders import ddpm_scheduler

    fig = P.plot_forward("digit", ddpm_scheduler(), every=50, save=tmp_path / "f.png")
    tiles = image_axes(fig)
    assert len(tiles) == 21 and tiles[0].get_title() == "t=0" and tiles[-1].get_title() == "t=999"
    first, last = tiles[0].images[0].get_array(), tiles[-1].images[0].get_array()
    assert np.std(first) > 0.2                                      # a clean digit ...
    assert 0.1 < np.mean(last) < 0.9                                # ... ends as noise around mid-grey


def test_plot_schedule_has_the_four_panels(tmp_path):
    from ppddpm.model.builders import ddpm_scheduler

    fig = P.plot_schedule(ddpm_scheduler(), save=tmp_path / "s.png")
    assert [ax.get_title() for ax in fig.axes] == ["β_t", "ᾱ_t = ∏ (1 − β_s)", "SNR_t = ᾱ_t / (1 − ᾱ_t)",
                                                   "posterior mean coefficients, eq. (7)"]
    assert fig.axes[2].get_yscale() == "log"


def test_animate_writes_a_gif_with_one_frame_per_recorded_step(traj, tmp_path):
    written = P.animate(traj, tmp_path / "x.gif", field="pred_original_sample", index=1)
    gif = Image.open(written[0])
    assert gif.n_frames == 20 and gif.size == (128, 144)
    with pytest.raises(ValueError, match=r"\.gif"):
        P.animate(traj, tmp_path / "x.mp4")


def test_clip_map_from_a_trajectory_and_from_a_report(pipe, tmp_path):
    traj = ppddpm.sample_trajectory(pipe, seed=2, num_inference_steps=10, batch_size=3,
                                    fields=("prev_sample", "pred_original_sample_unclipped"))
    t, share = ppddpm.pictures.plotting.clip_map(traj)
    assert share.shape == (10, 3)                        # per sample: |x̂_0| > clip_sample_range (1) before the clip
    raw = traj.pred_original_sample_unclipped
    np.testing.assert_allclose(share, (np.abs(raw) > 1).mean(axis=(2, 3, 4)), rtol=0, atol=1e-7)
    fig = ppddpm.pictures.plotting.plot_clip_map(traj, save=tmp_path / "map.png")
    assert (tmp_path / "map.png").stat().st_size > 1000 and "fired at" in fig.axes[0].get_title()
    report = ppddpm.compare(pipe, ["ppdiffusers", "ddim(eta=1.0)"], seed=[0, 1], num_inference_steps=5)
    assert ppddpm.pictures.plotting.clip_map(report)[1].shape == (5, 2)
    fig = ppddpm.pictures.plotting.plot_ab(report, save=tmp_path / "ab.png")
    assert "ddim(eta=1.0) [DDIMScheduler] vs ppdiffusers [DDPMScheduler]" in fig.axes[0].get_title()


def test_grid_spacing_by_t_by_steps_or_by_tiles(pipe):
    """A 100-step run: every 50 in t gives t = 950 … 0 (20 tiles), not 2 tiles 50 steps apart."""
    traj = ppddpm.sample_trajectory(pipe, seed=1, num_inference_steps=100)
    by_t = P.select_steps(traj, every_t=50)
    assert traj.timesteps[by_t].tolist() == list(range(950, -1, -50))
    assert traj.timesteps[P.select_steps(traj, every=50)].tolist() == [500, 0]
    assert len(P.select_steps(traj, tiles=7)) == 7 and P.select_steps(traj, tiles=7)[-1] == 99
    fig = P.plot_grid(traj, every_t=50)
    assert "every 50 in t" in fig._suptitle.get_text() and "100 sampling steps" in fig._suptitle.get_text()
    with pytest.raises(ValueError, match="choose one of every"):
        P.select_steps(traj, every=5, tiles=3)


def test_batch_grids_label_each_samples_rows(pipe):
    traj = ppddpm.sample_trajectory(pipe, seed=1, num_inference_steps=20, batch_size=3)
    fig = P.plot_grid(traj, every_t=100, ncols=5)
    labels = [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()]
    assert labels == ["sample 0", "sample 1", "sample 2"]


def test_gif_takes_fps_and_every_and_holds_the_last_frame(pipe, tmp_path):
    traj = ppddpm.sample_trajectory(pipe, seed=1, num_inference_steps=10)
    P.animate(traj, tmp_path / "a.gif", fps=5, every=3, hold=1.5, mp4=False)
    gif = Image.open(tmp_path / "a.gif")
    durations = []
    for k in range(gif.n_frames):
        gif.seek(k)
        durations.append(gif.info["duration"])
    assert gif.n_frames == 4                          # recorded steps 0, 3, 6 and the last (9)
    assert durations == [200, 200, 200, 1500]


def test_ab_figure_states_the_tables_number_and_hides_no_curve(pipe):
    report = ppddpm.compare(pipe, ["ppdiffusers", "direct"], seed=3, num_inference_steps=20, mode="free",
                            clip_sample=True)
    fig = P.plot_ab(report, "direct")
    diff_axes = next(ax for ax in fig.axes if "in [−1, 1] units" in ax.get_title())
    assert f"(max {report.final_max_abs('direct')[0]:.2g})" in diff_axes.get_title()   # ABReport's definition
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig).draw()
    legend, curves = fig.axes[0].get_legend(), fig.axes[0]
    assert legend.get_window_extent().y1 <= curves.get_window_extent().y0   # below the axes, over no curve


def test_a_grid_of_a_run_cut_short_is_titled_by_what_it_shows(pipe, tmp_path):
    """Ctrl-C at t = 921 of 1000 steps: every 50 in t finds t = 950 and the last step, 29 apart: two tiles,
    titled so (0.4: "every 29 in t"), and the run says where it stopped."""
    from conftest import interrupted_after

    with pytest.raises(KeyboardInterrupt), interrupted_after(pipe, 80):
        ppddpm.sample_trajectory(pipe, seed=1, num_inference_steps=1000, store="disk", path=tmp_path / "cut")
    traj = ppddpm.Trajectory.load(tmp_path / "cut")
    fig = P.plot_grid(traj)
    title = fig._suptitle.get_text()
    assert [ax.get_title() for ax in image_axes(fig)] == ["t=950", f"t={traj.timesteps[-1]}"]
    assert ": 2 tiles (" in title and "every 29" not in title
    assert f"stopped early: its last recorded step call is {len(traj)} of 1000" in title


def test_a_difference_of_zero_is_drawn_as_the_word(pipe):
    """"posterior" is the stock DDPM step bitwise: the final |Δ| panel says identical, no colour scale."""
    report = ppddpm.compare(pipe, ["ppdiffusers", "posterior"], seed=3, num_inference_steps=5)
    fig = P.plot_ab(report, "posterior")
    panel = next(ax for ax in fig.axes if "in [−1, 1] units" in ax.get_title())
    assert panel.get_title() == "|Δ| in [−1, 1] units: 0 at every pixel" and not panel.images
    assert [t.get_text() for t in panel.texts] == ["identical"] and len(fig.axes) == 5    # no colorbar axes
