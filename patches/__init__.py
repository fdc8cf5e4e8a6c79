"""Unified diffs against ppdiffusers 0.29.0 (package data of ppddpm: `ppddpm.patches`)."""
