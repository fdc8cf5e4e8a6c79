"""The equivalence table's rows, defined once: README's table (`make docs`) and `ppddpm demo` print them.

    finding = equivalence_finding(report, "fixed_small")     # one `compare` of EQUIVALENCE_VARIANTS → a dict
    print("\\n".join(equivalence_table([finding])))           # README's header and that row

A row: the routes of the article (eq. 11 `direct`, eq. 11 with ε from the clipped x̂_0, and `posterior`,
written out) against ppdiffusers' stock step, seed 777 on the bundled model; "× bound" is the worst
step's |Δ x_{t−1}| over the float32 bound of `ABReport.step_bound` (≤ 1: equivalent); the PSNR is of the
final images as displayed (`ABReport.final_psnr`), "identical" where they are.
"""
from __future__ import annotations

from typing import Iterable, List

EQUIVALENCE_VARIANTS = ["ppdiffusers", "posterior", "direct", "direct-clip-consistent"]
# paddle's CPU threads for README's numbers (`make docs`: OMP_NUM_THREADS; `ppddpm demo`: the same count):
# its float32 kernels split their sums by thread, so the last digits follow the count (paddle's default is 1)
THREADS = 2
NUMBERS = ("equivalent", "max_abs_prev", "max_rel_prev", "worst_ratio_to_bound", "steps_departing", "final_psnr_db")


def equivalence_finding(report, variance_type: str) -> dict:
    """One row's numbers from a `compare` report of EQUIVALENCE_VARIANTS (its first seed)."""
    s = report.summary()
    return {"steps": report.num_inference_steps, "variance_type": variance_type, "mode": report.mode,
            "clip_sample": report.clip_sample, "steps_with_clipping": s["clipping"]["steps_with_clipping"],
            **{v: {k: s[v][k] for k in NUMBERS} for v in report.others}}


def psnr_text(db) -> str:
    return "identical" if db is None else f"{db:.1f} dB"


def equivalence_table(findings: Iterable[dict]) -> List[str]:
    """README's header and one line per finding."""
    def cell(row, v):
        r = row[v]
        return f"{r['max_abs_prev']:.1e} ({r['worst_ratio_to_bound']:.2g}) {'✓' if r['equivalent'] else '✗'}"

    lines = ["| steps | σ_t² | mode | clip | clipping fired | posterior max\\|Δ\\| | direct max\\|Δ\\| (× bound) | "
             "direct-clip-consistent max\\|Δ\\| (× bound) | direct final PSNR |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in findings:
        lines.append(f"| {row['steps']} | {row['variance_type']} | {row['mode']} | "
                     f"{'on' if row['clip_sample'] else 'off'} "
                     f"| {row['steps_with_clipping']}/{row['steps']} | {row['posterior']['max_abs_prev']:.0e} | "
                     f"{cell(row, 'direct')} | {cell(row, 'direct-clip-consistent')} | "
                     f"{psnr_text(row['direct']['final_psnr_db'][0])} |")
    return lines
