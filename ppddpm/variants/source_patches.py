"""The article's other route: editing ppdiffusers' source. Unified diffs in `patches/`,
made against ppdiffusers 0.29.0, checked against the installed copy and applied to a
*copy* of it (never to site-packages).

    ppddpm patches list
    ppddpm patches check
    ppddpm patches apply --to DIR [NAME ...]   # DIR/ppdiffusers, patched; then sys.path.insert(0, DIR)
"""
from __future__ import annotations

import re
import shutil
from importlib import resources
from dataclasses import dataclass
from pathlib import Path
from typing import List
from ppddpm.errors import BadValue, Exists, Unknown

HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


class PatchError(ValueError):
    pass


@dataclass
class FilePatch:
    path: str                       # relative to the folder that holds `ppdiffusers/`
    hunks: list                     # [(old_start, old_lines, new_lines)]


def patches_dir() -> Path:
    return Path(str(resources.files("ppddpm.patches")))


def available() -> List[str]:
    return sorted(p.stem for p in patches_dir().glob("*.diff"))


def describe(name: str) -> str:
    """The first line of the patch's entry in patches/README.md."""
    readme = (patches_dir() / "README.md").read_text(encoding="utf-8")
    for line in readme.splitlines():
        if line.startswith(f"- `{name}.diff`"):
            return line.split("—", 1)[-1].strip()
    return ""


def parse(text: str) -> List[FilePatch]:
    files, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        if lines[i].startswith("--- ") and i + 1 < len(lines) and lines[i + 1].startswith("+++ "):
            target = lines[i + 1][4:].strip()
            target = target[2:] if target.startswith("b/") else target
            fp = FilePatch(target, [])
            files.append(fp)
            i += 2
            continue
        m = HUNK.match(lines[i])
        if m:
            if not files:
                raise PatchError("hunk before any file header")
            old, new, i = [], [], i + 1
            while i < len(lines) and not lines[i].startswith(("@@", "--- ")):
                tag, body = (lines[i][:1], lines[i][1:]) if lines[i] else (" ", "")
                if tag in " -":
                    old.append(body)
                if tag in " +":
                    new.append(body)
                i += 1
            files[-1].hunks.append((int(m.group(1)), old, new))
            continue
        i += 1
    if not files:
        raise PatchError("no file headers found: not a unified diff")
    return files


def _apply_text(source: str, hunks) -> str:
    lines = source.splitlines()
    shift = 0
    for start, old, new in hunks:
        at = start - 1 + shift
        if lines[at:at + len(old)] != old:
            hits = [k for k in range(len(lines) - len(old) + 1) if lines[k:k + len(old)] == old]
            if not hits:
                raise PatchError(f"hunk at line {start} does not match (the file differs from ppdiffusers 0.29.0)")
            at = min(hits, key=lambda k: abs(k - (start - 1 + shift)))
        lines[at:at + len(old)] = new
        shift = at - (start - 1) + len(new) - len(old)
    return "\n".join(lines) + ("\n" if source.endswith("\n") else "")


def _load(name: str) -> List[FilePatch]:
    path = patches_dir() / f"{name}.diff"
    if not path.exists():
        raise Unknown(f"unknown patch {name!r}; available: {', '.join(available())}")
    return parse(path.read_text(encoding="utf-8"))


def installed_root() -> Path:
    """The folder that holds the installed `ppdiffusers/` package."""
    import ppdiffusers

    return Path(ppdiffusers.__file__).resolve().parent.parent


def check(names=None, root=None) -> dict:
    """{name: "ok" | reason} — whether each patch applies cleanly to `root` (default: installed ppdiffusers)."""
    root = Path(root) if root else installed_root()
    result = {}
    for name in names or available():
        try:
            for fp in _load(name):
                _apply_text((root / fp.path).read_text(encoding="utf-8"), fp.hunks)
            result[name] = "ok"
        except (PatchError, FileNotFoundError) as exc:
            result[name] = str(exc)
    return result


def apply(to, names=None) -> Path:
    """Copy the installed ppdiffusers to `to`/ppdiffusers and apply the patches there, in order.
    All patches are checked before anything is written; `to` must be a new or empty folder
    outside site-packages."""
    names = list(names or available())
    dest = Path(to).expanduser().resolve()
    src_root = installed_root()
    if dest == src_root or src_root in dest.parents or dest in src_root.parents:
        raise BadValue(f"refusing to patch inside or above the installed ppdiffusers ({src_root}); "
                       f"give a separate folder")
    if dest.exists() and not dest.is_dir():
        raise BadValue(f"{dest} is a file; give a new or empty folder for the patched copy")
    if dest.exists() and any(dest.iterdir()):
        raise Exists(f"{dest} is not empty; give a new or empty folder")
    patched = {}
    for name in names:
        for fp in _load(name):
            text = patched.get(fp.path) or (src_root / fp.path).read_text(encoding="utf-8")
            patched[fp.path] = _apply_text(text, fp.hunks)        # raises before anything is written
    staging = dest.with_name(dest.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    shutil.copytree(src_root / "ppdiffusers", staging / "ppdiffusers",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for rel, text in patched.items():
        (staging / rel).write_text(text, encoding="utf-8")
    (staging / "PPDDPM_PATCHES.txt").write_text("\n".join(names) + "\n")
    if dest.exists():
        dest.rmdir()
    staging.rename(dest)
    return dest
