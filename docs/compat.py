"""`make compat`: ppddpm's quick tests against each paddle a user may have, each in a throw-away venv.

    .venv/bin/python docs/compat.py                # every version of PADDLES, one after the other
    .venv/bin/python docs/compat.py 3.1.1 2.6.2    # some of them (the others keep their last result)

For each paddle version: a fresh venv in the system's temp folder, `pip install paddlepaddle==V`, then
`pip install -e ".[test]"` — what a user with paddle preinstalled (AI Studio) does: their paddle stays —
then the QUICK test files with pytest; the venv is deleted after. A version ppddpm refuses (older than
3.0, ppddpm/_requires.py) is checked for the refusal instead: `import ppddpm` ends in its one-line
ImportError and `python -m ppddpm sample` exits 2 with one line. Writes docs/figures/compat.json and
README's block between `<!-- compat:start -->` and `<!-- compat:end -->`. Not in CI: each version
downloads a paddle wheel and takes minutes (one at a time, so the tests have the machine's cores).
"""
import datetime
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "docs"))
from readme_blocks import fill  # noqa: E402

JSON = ROOT / "docs" / "figures" / "compat.json"
PADDLES = ["3.0.0", "3.1.1", "3.2.2", "3.3.1", "2.6.2"]
# the quick tests: recording every sampler family bitwise, verify against the float64 references, the
# references themselves, the public API and the 0.3 paths, the paddle check (a few minutes on 2 cores)
QUICK = ["tests/test_reference.py", "tests/test_samplers.py", "tests/test_verify.py", "tests/test_public_api.py",
         "tests/test_paddle_versions.py"]
REFUSED_BELOW = (3, 0)


def _sh(cmd, timeout=3600, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kwargs)


def _environment(version: str, folder: Path) -> Path:
    """A venv in `folder` with paddle `version` first, then ppddpm (editable, with its test extra)."""
    _sh([sys.executable, "-m", "venv", folder], timeout=600).check_returncode()
    python = folder / "bin" / "python"
    for step in (["pip", "install", "-q", "--upgrade", "pip"], ["pip", "install", "-q", f"paddlepaddle=={version}"],
                 ["pip", "install", "-q", "-e", f"{ROOT}[test]"]):
        res = _sh([python, "-m", *step], cwd=ROOT)
        if res.returncode:
            raise RuntimeError(f"{' '.join(step)}: {(res.stderr or res.stdout).strip().splitlines()[-1]}")
    return python


def _versions(python: Path) -> dict:
    code = ("import importlib.metadata as m; print(m.version('paddlepaddle'), m.version('ppdiffusers'), "
            "m.version('safetensors'), m.version('numpy'))")
    names = ("paddle", "ppdiffusers", "safetensors", "numpy")
    return dict(zip(names, _sh([python, "-c", code]).stdout.split()))


def _quick_tests(python: Path) -> dict:
    start = time.perf_counter()
    res = _sh([python, "-m", "pytest", "-n", "2", "--dist", "loadgroup", *QUICK], cwd=ROOT)   # setup.cfg: -q
    seconds = time.perf_counter() - start
    summary = res.stdout.strip().splitlines()[-1] if res.stdout.strip() else res.stderr.strip()[-300:]
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|errors?|skipped)", summary)}
    return {"passed": counts.get("passed", 0), "failed": counts.get("failed", 0) + counts.get("error", 0)
            + counts.get("errors", 0), "skipped": counts.get("skipped", 0), "seconds": round(seconds),
            "ok": res.returncode == 0, "summary": summary}


def _refusal(python: Path) -> dict:
    """What a refused paddle gets: the ImportError's line, and the command line's status and stderr."""
    imported = _sh([python, "-c", "import ppddpm"], cwd=tempfile.gettempdir())
    command = _sh([python, "-m", "ppddpm", "sample", "--steps", "3"], cwd=tempfile.gettempdir())
    last = imported.stderr.strip().splitlines()[-1] if imported.stderr.strip() else ""
    ok = (last.startswith("ImportError: this environment has paddle") and command.returncode == 2
          and len(command.stderr.strip().splitlines()) == 1 and "Traceback" not in command.stderr)
    return {"ok": ok, "import_error": last, "cli_status": command.returncode, "cli_stderr": command.stderr.strip()}


def measure(version: str) -> dict:
    folder = Path(tempfile.mkdtemp(prefix=f"ppddpm-compat-{version}-"))
    try:
        python = _environment(version, folder)
        row = {"paddle": version, "versions": _versions(python)}
        refused = tuple(int(p) for p in version.split(".")[:2]) < REFUSED_BELOW
        row.update({"expect": "refused", **_refusal(python)} if refused else {"expect": "runs", **_quick_tests(python)})
    except (RuntimeError, subprocess.SubprocessError) as exc:
        row = {"paddle": version, "ok": False, "error": str(exc)}
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    row["date"] = datetime.date.today().isoformat()
    return row


def render(data: dict) -> str:
    lines = [f"`make compat` (docs/compat.py; not in CI): a fresh venv per paddle, `pip install paddlepaddle==V`, then "
             f"`pip install -e \".[test]\"`, then the quick tests ({', '.join(Path(q).name for q in data['quick'])}):",
             "", "| paddle | result | time | ppdiffusers, safetensors, numpy | date |", "|---|---|---|---|---|"]
    for row in sorted(data["rows"], key=lambda r: [int(p) for p in r["paddle"].split(".")], reverse=True):
        v = row.get("versions", {})
        installed = ", ".join(v.get(k, "?") for k in ("ppdiffusers", "safetensors", "numpy")) if v else "—"
        if "error" in row:
            result, took = f"✗ could not set up: {row['error']}", "—"
        elif row["expect"] == "refused":
            result = ("✓ refused at import in one line (CLI: exit 2)" if row["ok"] else
                      f"✗ expected a one-line refusal, got: {row['import_error'] or row['cli_stderr'][:200]}")
            took = "—"
        else:
            result = f"{'✓' if row['ok'] else '✗'} {row['passed']} passed, {row['failed']} failed"
            took = f"{row['seconds']} s"
        lines.append(f"| {row['paddle']} | {result} | {took} | {installed} | {row['date']} |")
    return "\n".join(lines)


def main(versions):
    data = json.loads(JSON.read_text()) if JSON.exists() else {"rows": []}
    data["quick"] = QUICK
    for version in versions:
        print(f"paddle {version}: setting up a venv and running the quick tests …", flush=True)
        row = measure(version)
        data["rows"] = [r for r in data["rows"] if r["paddle"] != version] + [row]
        JSON.write_text(json.dumps(data, indent=1) + "\n")
        print(f"  {render({'quick': QUICK, 'rows': [row]}).splitlines()[-1]}", flush=True)
    fill("compat", render(data), f"docs/compat.py from {JSON.relative_to(ROOT)}")
    print(f"wrote {JSON.relative_to(ROOT)} and README's compat block")
    return 0 if all(r.get("ok") for r in data["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or PADDLES))
