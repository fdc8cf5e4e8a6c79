"""README's examples run verbatim (the blocks marked for it)."""
import re
import sys
from pathlib import Path

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


def marked_block(marker):
    match = re.search(r"<!-- " + re.escape(marker) + r".*?-->\s*```python\n(.*?)```", README, re.S)
    assert match, f"README has no python block marked {marker!r}"
    return match.group(1)


def test_any_sampler_tour_runs_verbatim():
    scope = {}
    exec(compile(marked_block("readme-samplers"), "README.md (Any sampler)", "exec"), scope)
    traj = scope["traj"]                                       # the Euler run, last in the block
    assert traj.scheduler == "EulerAncestralDiscreteScheduler" and len(traj) == 50
    assert traj.timesteps[:3].tolist() == [980, 960, 940]    # the bundled config's "leading" spacing
    assert scope["ddim"].scheduler.config.clip_sample is True  # carried over from the bundled DDPM


def test_ddim_example_runs_verbatim():
    import ppddpm

    scope = {"ppddpm": ppddpm, "pipe": ppddpm.load_pipeline()}
    exec(compile(marked_block("readme-ddim"), "README.md (DDIM)", "exec"), scope)
    assert scope["report"].equivalent() is True                     # what the block's comment claims
    assert scope["report"].clip_sample is True


def test_recording_pipeline_example_runs_verbatim():
    """The article's drop-in: the block defines everything it uses (no undefined `path`)."""
    scope = {}
    exec(compile(marked_block("readme-recording-pipeline"), "README.md (RecordingDDPMPipeline)", "exec"), scope)
    assert len(scope["images"]) == 1 and len(scope["all_images"]) == len(scope["all_x_0"]) == 1000


def _docs_module(name):
    import importlib.util

    root = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(root / "docs"))
    spec = importlib.util.spec_from_file_location(name, root / "docs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_tables_are_the_committed_json():
    """Every measured table in README is rendered from its committed JSON (`make docs`, `make bench`)."""
    blocks = _docs_module("readme_blocks")
    assert blocks.stale_blocks(README) == []


def test_readme_ddim_tables_are_the_committed_json():
    """README's DDIM numbers are generated (docs/ddim_findings.py) from docs/figures/ddim.json:
    one definition per number, and a hand edit of either shows here."""
    findings = _docs_module("ddim_findings")
    data = findings.SECTIONS[0].committed()
    assert _docs_module("readme_blocks").block("ddim-findings", README) == findings.render(data)
    # the claims the section makes are what the JSON says
    clipped = [r for r in data["equivalence"]
               if r["variant"] == findings.CLIPPED and r["variance_type"] == "fixed_small"]
    assert clipped and all(r["equivalent"] for r in clipped)
    default_on = [r for r in data["equivalence"] if r["variant"] == findings.DEFAULT and r["clip_sample"]]
    assert default_on and all(not r["equivalent"] and r["departs_only_where_clipping_fires"] for r in default_on)
    large = [r for r in data["equivalence"] if r["variance_type"] == "fixed_large"]
    assert large and not any(r["equivalent"] for r in large)


def test_readme_verify_table_is_the_committed_json():
    """README's `ppddpm.verify` table is docs/verify_findings.py's rendering of docs/figures/verify.json,
    and what the section says of it holds there: every sampler verifies, every broken step departs."""
    findings = _docs_module("verify_findings")
    data = findings.SECTIONS[0].committed()
    assert _docs_module("readme_blocks").block("verify-table", README) == findings.render(data)
    # every sampler holds, UniPC's default among them (its solve's dtype mix fixed by ppddpm.core.fixes)
    assert data["samplers"] and all(row.get("ok") for row in data["samplers"])
    assert any(row["label"] == "unipc" for row in data["samplers"])
    assert len(data["broken"]) == 3 and not any(row["ok"] for row in data["broken"])


def test_latent_tour_runs_verbatim(capsys):
    scope = {}
    exec(compile(marked_block("readme-latent"), "README.md (Latent pipelines)", "exec"), scope)
    traj, pipe = scope["traj"], scope["pipe"]
    assert traj.meta["space"] == "latent" and traj.meta["latent"]["scaling_factor"] == 0.18215   # as commented
    assert traj.meta["latent"]["pipeline"] == type(pipe).__name__ == "StableDiffusionPipeline"   # a run of `pipe`
    assert traj.scheduler == type(pipe.scheduler).__name__
    assert traj.pred_original_sample.shape == (10, 1, 4, 8, 8)
    assert traj.field("pred_original_sample_decoded").shape == (10, 1, 3, 16, 16)
    assert traj.meta["conditioning"] == {"prompt": "a red cat", "guidance_scale": 7.5}
    assert scope["push"].shape == (10, 1, 4, 8, 8) and scope["pixels"].prev_sample.shape == (10, 1, 3, 16, 16)
    assert "gap to the VAE decode" in capsys.readouterr().out               # "prints its gap"
    assert "prompt 'a red cat', guidance 7.5" in scope["fig"]._suptitle.get_text()       # "the prompt in the title"
    assert scope["fig"].axes[0].images[0].get_array().shape == (16, 16, 3)              # decoded tiles, not latents


def test_latent_networked_example_compiles():
    """The real-checkpoint block needs the model hub, so CI only compiles it (a typo still fails)."""
    compile(marked_block("readme-latent-networked"), "README.md (Latent pipelines, networked)", "exec")


def test_readme_objective_table_is_the_committed_json():
    """README's objective study is docs/objective_findings.py's rendering of docs/figures/objective.json, and the
    JSON holds the five runs with a full-T held-out bound on at least 128 digits and 1000-step scores."""
    import json

    findings = _docs_module("objective_findings")
    data = json.loads(findings.JSON.read_text())
    assert _docs_module("readme_blocks").block("objective-findings", README) == findings.render(data)
    assert [r["name"] for r in data["runs"]] == list(findings.RUNS)
    for r in data["runs"] + [data["bundled"]]:
        assert r["bound"]["num_timesteps"] == 1000 and not r["bound"]["estimated"] and r["bound"]["num_images"] >= 128
    assert all(r["quality"]["steps"] == 1000 for r in data["runs"])
