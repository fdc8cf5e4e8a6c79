"""`make docs`: every number and picture in README, docs/figures and the notebooks, made by this version.

    make docs                                        # every section, then the notebooks (about an hour on 2 cores)
    .venv/bin/python docs/make_docs.py verify ddim   # some sections (names: --list)
    .venv/bin/python docs/make_docs.py --notebooks   # only the notebooks
    .venv/bin/python docs/make_docs.py --short OUT.json   # every section at SHORT only, to OUT.json (CI's check)
    .venv/bin/python docs/make_docs.py --readme           # README's blocks from the committed JSON (no compute)

Each section (docs/sections.py) is computed at its FULL setting — its JSON in docs/figures, its pictures,
its README blocks — and at its SHORT setting, kept as the JSON's `check`, which CI computes again
(tests/test_docs_drift.py, docs/drift.py). The notebooks are executed at full length for their committed
outputs and once more with PPDDPM_FAST=1 for the text CI compares (docs/build_notebooks.py). README's
other blocks are rendered from JSON that other commands write: `make bench` (benchmarks/results.json)
and docs/ship_model.py (the bundled model). Run on a fresh clone, `make docs` leaves git clean: nothing
it writes depends on the clock.
"""
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from drift import THREADS  # noqa: E402

if __name__ == "__main__":       # `make docs` itself; a module that imports this one (readme_blocks) keeps its own
    os.environ["OMP_NUM_THREADS"] = THREADS    # before paddle loads: its kernels' rounding follows the thread count
    os.environ.setdefault("PPDDPM_PROGRESS", "0")
    import warnings

    warnings.filterwarnings("ignore")
import ppddpm  # noqa: E402
import readme_blocks  # noqa: E402
from sections import FIGURES, FULL, SHORT, write_json  # noqa: E402


def all_sections() -> list:
    """Every section, in the order `make docs` runs them (the modules that define them are imported here)."""
    import ddim_findings
    import facts
    import make_figures
    import verify_findings

    return make_figures.SECTIONS + verify_findings.SECTIONS + ddim_findings.SECTIONS + facts.SECTIONS


def make(section) -> dict:
    """One section at FULL (pictures into docs/figures) with its SHORT check, written and rendered."""
    FIGURES.mkdir(parents=True, exist_ok=True)
    data = section.compute(FULL, FIGURES)
    data["check"] = section.compute(SHORT, None)
    data["made_by"] = {"ppddpm": ppddpm.__version__, "threads": int(THREADS)}
    write_json(section.json_path, data)
    for block, render in section.blocks.items():
        readme_blocks.fill(block, render(data), f"{section.writer} from {section.json_path.relative_to(HERE.parent)}")
    print(f"{section.name}: wrote {section.json_path.relative_to(HERE.parent)}"
          + (f" and README's {', '.join(section.blocks)}" if section.blocks else ""), flush=True)
    return data


def main(argv):
    import build_notebooks

    sections = {s.name: s for s in all_sections()}
    if "--list" in argv:
        print(" ".join(sections))
        return
    if "--readme" in argv:            # README's blocks and inline numbers from the committed JSON, nothing computed
        for section in sections.values():
            for block, render in section.blocks.items():
                readme_blocks.fill(block, render(section.committed()),
                                   f"{section.writer} from {section.json_path.relative_to(HERE.parent)}")
        readme_blocks.fill_others()
        return
    if "--short" in argv:             # CI's check (tests/test_docs_drift.py): nothing in the repository is written
        out = Path(argv[argv.index("--short") + 1])
        write_json(out, {name: section.compute(SHORT, None) for name, section in sections.items()})
        return
    names = [a for a in argv if not a.startswith("--")]
    unknown = [n for n in names if n not in sections]
    if unknown:
        raise SystemExit(f"unknown section(s) {unknown}; choose from {' '.join(sections)}")
    if "--notebooks" not in argv:
        for name in names or sections:
            make(sections[name])
        readme_blocks.fill_others()
    if "--notebooks" in argv or not names:
        build_notebooks.build(execute_cells=True)


if __name__ == "__main__":
    main(sys.argv[1:])
