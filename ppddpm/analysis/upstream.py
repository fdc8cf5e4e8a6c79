"""ppdiffusers' own scheduler tests as a check on ppddpm.

The ppdiffusers wheel installs its test suite (`tests/schedulers/test_scheduler_*.py` in
site-packages). `run_scheduler_suite(variant="posterior")` runs the DDPM suite with the variant
patched into `DDPMScheduler` class-wide; `run_scheduler_suite("ddim", observe=True)` runs the
DDIM suite with ppddpm's step observer (the recorder's whole path, noise included) installed on
`DDIMScheduler` class-wide. Every test that passes stock must pass so. On paddle 3.3.1 some
tests fail with the stock step (`known_failure(family, test)` says why: KNOWN_FAILURES, and
SUITE_FAILURES where a suite's reason differs): the comparison is always against a stock run.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

from ppddpm.errors import BadValue, NotFound, Unknown

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

_GOLDEN = "golden sum recorded on another paddle build's random stream"
_UNIPC_SOLVE = ("upstream bug on paddle 3.3.1: UniC-p (p >= 2) and UniP-p (p >= 3) call `paddle.linalg.solve(R, b)` "
                "with R float64 (`paddle.to_tensor([rk, 1.0])` of a float32 0-d tensor and a float is float64) and b "
                "float32; every default-config run stops at its third step")
_THRESHOLD = "the thresholding bug for batch > 1 (`_threshold_sample`'s per-sample bounds to `paddle.clip`)"
# Per suite, where the reason differs from (or is not in) KNOWN_FAILURES.
SUITE_FAILURES = {
    "kdpm2": {"test_full_loop_with_noise": "golden sum 70408.4062 with an absolute tolerance of 0.01 on a sum of 7e4 "
                                           "(6e-7 relative): this build's float32 rounding gives 70408.4531"},
    "kdpm2-ancestral": {name: _GOLDEN + " (the step draws z from the generator at every call)" for name in
                        ("test_full_loop_no_noise", "test_full_loop_with_noise", "test_full_loop_device",
                         "test_full_loop_with_v_prediction")},
    "unipc": {name: _UNIPC_SOLVE for name in
              ("test_full_loop_no_noise", "test_full_loop_with_karras", "test_full_loop_with_karras_and_v_prediction",
               "test_full_loop_with_v_prediction", "test_lower_order_final", "test_prediction_type",
               "test_solver_order_and_type", "test_switch", "test_thresholding", "test_timesteps")},
    "deis": {"test_thresholding": _THRESHOLD},
    "dpmsolver-singlestep": {"test_thresholding": _THRESHOLD},
    "dpmsolver-sde": {name: _GOLDEN + " (the Brownian tree is seeded from paddle's global RNG)" for name in
                      ("test_full_loop_no_noise", "test_full_loop_device", "test_full_loop_device_karras_sigmas",
                       "test_full_loop_with_v_prediction")},
    "lcm": {"test_full_loop_multistep": _GOLDEN + " (LCM re-noises with z from the generator)",
            "test_thresholding": _THRESHOLD},
}


def known_failure(family: str, test: str) -> str:
    """Why ppdiffusers' `test` of `family`'s suite fails with the stock step on paddle 3.3.1 CPU
    ("" when it is not a known failure)."""
    return SUITE_FAILURES.get(family, {}).get(test) or KNOWN_FAILURES.get(test, "")


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
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "ppddpm.analysis._upstream_plugin",
               str(path)]
        proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=timeout)
        if not report.exists():
            raise RuntimeError(f"ppdiffusers' test run produced no report:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
        data = json.loads(report.read_text())
    return (data["outcomes"], data["steps_observed"]) if with_count else data["outcomes"]
