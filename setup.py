from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
version = next(line.split('"')[1] for line in (HERE / "ppddpm" / "__init__.py").read_text().splitlines()
               if line.startswith("__version__"))

# paddle itself is an extra: GPU users install paddlepaddle-gpu, AI Studio has paddle
# preinstalled; `pip install ppddpm[cpu]` (what `make` does) brings the CPU build.
# Tested range: paddle 3.0–3.3 (`make compat`: the quick tests on 3.0.0, 3.1.1, 3.2.2, 3.3.1). paddle 2.6
# cannot run ppdiffusers 0.29's dependencies, and `import ppddpm` refuses a paddle older than 3.0 in one
# line (ppddpm/_requires.py): a preinstalled paddle is never replaced, so the check is at import, not here.
PADDLE_CPU = [
    "paddlepaddle==3.3.1",           # the build ppddpm is tested with (ppdiffusers 0.29 imports on it)
]

REQUIRES = [
    "ppdiffusers==0.29.0",           # the scheduler/pipeline source the patches/ diffs are made against
    "paddlenlp==2.8.1",              # ppdiffusers 0.29 imports paddlenlp; 2.8.1 is the release that matches it
    "huggingface_hub>=0.22,<0.26",   # 0.26 removed `cached_download`, which ppdiffusers 0.29 imports
    "aistudio-sdk==0.2.6",           # 0.3 removed `aistudio_sdk.hub.download`, which ppdiffusers 0.29 imports
    "datasets<3",                    # datasets 3+ needs a huggingface_hub newer than the pin above
    "numpy",
    "matplotlib",
    "scikit-learn",                  # the offline digits data set and the sample-quality classifier
    "tqdm",
]

EXTRAS = {
    "cpu": PADDLE_CPU,
    "test": ["pytest", "hypothesis", "nbformat", "nbclient", "ipykernel", "psutil",
             "pytest-xdist",          # `make test` runs the suite on two workers (this machine has two cores)
             # `make lint` (run by `make test`), ruff.toml, 120 columns; pinned: a new release's rules can't turn CI red
             "ruff==0.17.6",
             # drives Debian's chromium for the explorer test; newer releases need urllib3 > 2.0,
             # which ppdiffusers 0.29 refuses (urllib3<=2.0.0)
             "selenium>=4.15,<4.33"],
    "notebooks": ["jupyterlab", "ipykernel"],   # `make notebooks`: open notebooks/ locally in JupyterLab
}

setup(
    name="ppddpm",
    version=version,
    description="Watch DDPM work step by step: recording, step variants and plots for ppdiffusers",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    # ppddpm.assets holds no code, only the bundled model: listed so setuptools ships it as a package
    # (its data found by package_data) instead of warning that it was added as data
    packages=find_packages(include=["ppddpm", "ppddpm.*"]) + ["ppddpm.assets", "ppddpm.patches"],
    package_dir={"ppddpm.patches": "patches"},    # the diffs live in patches/, shipped as package data
    package_data={"ppddpm.assets": ["*/*", "*/*/*"], "ppddpm.patches": ["*.diff", "README.md"]},
    include_package_data=True,
    install_requires=REQUIRES,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["ppddpm = ppddpm.__main__:run"]},
)
