"""ppdiffusers' own scheduler tests as a check on ppddpm.

The ppdiffusers wheel installs its test suite (`tests/schedulers/test_scheduler_*.py` in
site-packages). `run_scheduler_suite(variant="posterior")` runs the DDPM suite with the variant
patched into `DDPMScheduler` class-wide; `run_scheduler_suite("ddim", observe=True)` runs the
DDIM suite with ppddpm's step observer (the recorder's whole path, noise included) installed on
`DDIMScheduler` class-wide. Every test that passes stock must pass so. On paddle 3.3.1 some
tests fail with the stock step (KNOWN_FAILURES): the comparison is always against a stock run.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

from .errors import BadValue, NotFound, Unknown

KNOWN_FAILURES = {
    "test_full_loop_no_noise": "golden sum recorded on another paddle build: the loop still draws noise from "
                               "`generator` (despite its name) and this build's random stream differs",
    "test_full_loop_with_noise": "golden sum recorded on another paddle build's random stream",
    "test_full_loop_with_v_prediction": "golden sum recorded on another paddle build's random stream",
    "test_thresholding": "upstream bug: `_threshold_sample` passes per-sample bounds to `paddle.clip`, which "
                         "rejects them for batch > 1 (patches/fix-threshold-batch.diff; ppddpm's variants "
                         "threshold per sample)",
    "test_full_loop_no_noise_thres": "the same thresholding bug (DPM-Solver's `_threshold_sample`)",
    "test_full_loop_device": "golden sum recorded on another paddle build's random stream",
    "test_fp16_support": "paddle's CPU build has no float16 `multiply` kernel",
}


# sampler family → (scheduler class, the suite's file in the wheel's tests/schedulers/)
SUITES = {
    "ddpm": ("DDPMScheduler", "test_scheduler_ddpm.py"),
    "ddim": ("DDIMScheduler", "test_scheduler_ddim.py"),
    "pndm": ("PNDMScheduler", "test_scheduler_pndm.py"),
    "euler": ("EulerDiscreteScheduler", "test_scheduler_euler.py"),
    "euler-ancestral": ("EulerAncestralDiscreteScheduler", "test_scheduler_euler_ancestral.py"),
    "lms": ("LMSDiscreteScheduler", "test_scheduler_lms.py"),
    "heun": ("HeunDiscreteScheduler", "test_scheduler_heun.py"),
    "dpmsolver-multistep": ("DPMSolverMultistepScheduler", "test_scheduler_dpm_multi.py"),
    "kdpm2": ("KDPM2DiscreteScheduler", "test_scheduler_kdpm2_discrete.py"),
    "kdpm2-ancestral": ("KDPM2AncestralDiscreteScheduler", "test_scheduler_kdpm2_ancestral.py"),
    "unipc": ("UniPCMultistepScheduler", "test_scheduler_unipc.py"),
    "deis": ("DEISMultistepScheduler", "test_scheduler_deis.py"),
    "dpmsolver-singlestep": ("DPMSolverSinglestepScheduler", "test_scheduler_dpm_single.py"),
    "dpmsolver-sde": ("DPMSolverSDEScheduler", "test_scheduler_dpm_sde.py"),
    "lcm": ("LCMScheduler", "test_scheduler_lcm.py"),
}                           # EDMEulerScheduler: the wheel ships no suite for it


def suite_path(family: str = "ddpm") -> Path:
    import ppdiffusers

    if family not in SUITES:
        raise Unknown(f"no ppdiffusers suite for {family!r}; choose from {', '.join(SUITES)}")
    path = Path(ppdiffusers.__file__).resolve().parent.parent / "tests" / "schedulers" / SUITES[family][1]
    if not path.exists():
        raise NotFound(f"ppdiffusers' scheduler tests are not installed ({path} is missing)")
    return path


def run_scheduler_suite(variant: Optional[str] = None, family: str = "ddpm", observe: bool = False,
                        timeout: float = 900, with_count: bool = False):
    """{test name: "passed" | "failed" | "skipped"} for ppdiffusers' tests of `family`'s scheduler,
    with `variant` patched into DDPMScheduler and/or ppddpm's observer on the family's class
    (neither: the stock run). `with_count=True` also returns how many steps were observed."""
    if variant is not None and family != "ddpm":
        raise BadValue(f"step variants are DDPM's; run family 'ddpm' with variant={variant!r}")
    path = suite_path(family)
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        env = dict(os.environ, PPDDPM_UPSTREAM_REPORT=str(report), PPDDPM_UPSTREAM_VARIANT=variant or "",
                   PPDDPM_UPSTREAM_OBSERVE=SUITES[family][0] if observe else "")
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "ppddpm._upstream_plugin",
               str(path)]
        proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=timeout)
        if not report.exists():
            raise RuntimeError(f"ppdiffusers' test run produced no report:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
        data = json.loads(report.read_text())
    return (data["outcomes"], data["steps_observed"]) if with_count else data["outcomes"]
