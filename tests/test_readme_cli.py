"""README's command lines, pasted in order (issue 31.6): every `ppddpm …` line of README's shell blocks
runs, one after another, in one empty folder, and each exits 0 — no line trips over what an earlier one
wrote (before 0.5 the DDIM line stopped at the `runs/sample` that the Stable Diffusion line had made).

What is substituted, and only that:
- the model folders README names by placeholder (SD_DIR, DIT_DIR): the tiny random pipelines of
  `ppddpm.model.builders`, saved (the hub is unreachable here);
- sizes: `--steps N` at most 5, `--seed 0-999` as 0-1, `--nproc 8` as 2 (with `--oversubscribe`:
  8 ranks are for 8 GPUs), and `--steps 5` added to `ab` lines, whose default is 1000;
- the two-node line (`--ips`) is tests/test_two_nodes.py's: it needs two network namespaces.
"""
import re
import shlex
from pathlib import Path

import pytest

from ppddpm.cli.main import main

README = Path(__file__).resolve().parents[1] / "README.md"
MAX_STEPS = 5


def readme_command_lines() -> list:
    """The `ppddpm …` commands of README's ```bash blocks, in order (an `a && b` line gives both)."""
    lines, inside = [], False
    for line in README.read_text().splitlines():
        if line.startswith("```"):
            inside = line.strip() == "```bash" if not inside else False
            continue
        if inside and line.startswith("ppddpm "):
            code = line.split("  #")[0].strip()
            lines += [part.strip() for part in code.split("&&")]
    return lines


def substituted(words: list, folders: dict) -> list:
    """One command's words with the model folders and sizes substituted (module docstring)."""
    words = [folders.get(w, w) for w in words]
    out = []
    for k, w in enumerate(words):
        before = words[k - 1] if k else ""
        if before == "--steps":
            w = str(min(int(w), MAX_STEPS))
        elif before == "--seed" and w == "0-999":
            w = "0-1"
        elif before == "--nproc" and int(w) > 2:
            w = "2"
            out.append(w)
            out.append("--oversubscribe")
            continue
        out.append(w)
    if out[1] == "ab" and "--steps" not in out:
        out += ["--steps", str(MAX_STEPS)]
    return out


def test_readme_lists_the_lines_this_test_runs():
    lines = readme_command_lines()
    assert len(lines) >= 8 and any("--ips" in line for line in lines)
    outs = [re.search(r"--out (\S+)", line).group(1) for line in lines if line.split()[1] in ("sample", "ab")]
    assert len(outs) == len(set(outs)), outs          # each run its own --out


@pytest.mark.xdist_group("readme-cli")
def test_readme_command_lines_run_in_order_as_printed(tmp_path, monkeypatch, capsys):
    from ppddpm.model.builders import tiny_latent_pipeline

    folders = {}
    for name, kind in (("SD_DIR", "stable-diffusion"), ("DIT_DIR", "dit")):
        tiny_latent_pipeline(kind).save_pretrained(str(tmp_path / name))
        folders[name] = str(tmp_path / name)
    monkeypatch.chdir(tmp_path)
    ran = []
    for line in readme_command_lines():
        if "--ips" in line:
            continue
        argv = substituted(shlex.split(line), folders)[1:]
        status = main(argv)
        err = capsys.readouterr().err
        assert status == 0, (line, argv, err[-2000:])
        ran.append(argv[0])
    assert ran.count("sample") >= 5 and {"verify", "view", "ab"} <= set(ran)
    assert (tmp_path / "runs" / "view.html").stat().st_size > 10_000
