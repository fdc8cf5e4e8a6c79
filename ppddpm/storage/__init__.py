"""Storage: the Trajectory and its files. `trajectory` (the arrays, save / load), `format` (what the
fields and per-step numbers are, and the checks every reader makes), `npz` (one finished run),
`stream` (a folder written step by step, crash-consistent, and read back), `writer` (TrajectoryWriter:
what fills a Trajectory while a run goes)."""
from ppddpm._lazy import submodules_on_access

__getattr__ = submodules_on_access(__name__)
