"""Storage: the Trajectory and its files. `trajectory` (the arrays, save / load), `format` (what the
fields are, how per-step columns are held, and the checks every reader makes), `npz` (one finished run),
`stream` (a folder written step by step, crash-consistent, and read back), `writer` (TrajectoryWriter:
what fills a Trajectory while a run goes), `legacy` (files of 0.1–0.4)."""
from ppddpm._lazy import submodules_on_access

__getattr__ = submodules_on_access(__name__)
