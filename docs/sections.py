"""The sections of generated numbers: what `make docs` computes and CI checks, one definition each.

A section is one JSON file in docs/figures (its numbers), the README blocks rendered from it, and one
function that computes it at a setting:

    compute(setting, pictures)  ->  dict        setting: FULL (what is published) or SHORT (CI's check);
                                                pictures: a folder to draw the section's figures into, or None

`make docs` (docs/make_docs.py) writes `compute(FULL, docs/figures)` with `compute(SHORT, …)` under its
`check` key; tests/test_docs_drift.py computes SHORT again and compares it with `check`
(docs/drift.py). A figure's words — titles, labels, texts, which a picture's pixels cannot be
compared by — are part of its section's numbers (`figure_text`), so a changed title is drift too.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Optional

ROOT = Path(__file__).resolve().parent.parent
FIGURES = ROOT / "docs" / "figures"
FULL, SHORT = "full", "short"


@dataclass
class Section:
    name: str
    compute: Callable[[str, Optional[Path]], dict]
    blocks: Dict[str, Callable[[dict], str]] = field(default_factory=dict)   # README block → render(data)
    json_name: str = ""                  # default: NAME.json in docs/figures
    writer: str = ""                     # the script named in README's block markers

    @property
    def json_path(self) -> Path:
        return FIGURES / (self.json_name or f"{self.name}.json")

    def committed(self) -> dict:
        return json.loads(self.json_path.read_text(encoding="utf-8"))


def figure_text(fig) -> dict:
    """The words of a matplotlib figure: its suptitle and texts, and each axes' title and axis labels,
    in drawing order (tick labels are matplotlib's choice, not ours). Closes the figure."""
    import matplotlib.pyplot as plt

    words = {"suptitle": fig._suptitle.get_text() if fig._suptitle is not None else "",
             "texts": [t.get_text() for t in fig.texts if t.get_text() and t is not fig._suptitle],
             "axes": [{"title": " | ".join(filter(None, (ax.get_title(loc) for loc in ("left", "center", "right")))),
                       "xlabel": ax.get_xlabel(), "ylabel": ax.get_ylabel(),
                       "texts": [t.get_text() for t in ax.texts if t.get_text()]}
                      for ax in fig.axes]}
    words["axes"] = [a for a in words["axes"] if any(a.values())]
    plt.close(fig)
    return words


def save_figure(fig, pictures: Optional[Path], name: str) -> dict:
    """Save `fig` as pictures/NAME (when a folder is given) and return its words (`figure_text`)."""
    if pictures is not None:
        fig.savefig(pictures / name, dpi=fig.dpi, bbox_inches="tight", metadata={"Software": None})
    return figure_text(fig)


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
