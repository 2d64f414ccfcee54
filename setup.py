"""robust_losses: noise-robust classification losses in JAX, with Flax experiments.

`pip install .` installs the library alone (the `robust_losses` package, JAX-side requirements only). The
experiments, configs and benchmarks run from the repository root (`python -m experiments.train ...`) and
need the `experiments` extra; `scripts/setup.sh` installs it with the `test` extra.
"""

import os

from setuptools import setup

EXPERIMENTS = [
  "flax>=0.12.7",
  "chex>=0.1.92",
  "ml-collections>=1.0",
  "absl-py",
  "tensorflow-datasets>=4.9.7",
  "array-record",
  "orbax-checkpoint>=0.11",
  "scikit-learn",
  "tqdm",
  "matplotlib",
  "tensorboardX",
  "pillow",
  "grain>=0.2.18",
  "dm-pix>=0.4.5",
]

setup(
  name="robust_losses",
  version="0.2.0",
  description="Noise-robust classification losses for JAX/optax, with data-parallel Flax experiments.",
  long_description=open("README.md").read() if os.path.exists("README.md") else "",
  long_description_content_type="text/markdown",
  python_requires=">=3.10",
  # Only the library: no generic top-level names (experiments, configs, benchmarks) in site-packages.
  packages=["robust_losses"],
  install_requires=[
    "jax>=0.10,<0.11",
    "jaxlib>=0.10,<0.11",
    "optax>=0.2.8",
    "numpy",
  ],
  extras_require={
    "experiments": EXPERIMENTS,
    "test": EXPERIMENTS + ["pytest>=8", "pytest-xdist", "ruff==0.17.6"],
    # PyTorch (CPU build) is only the reference side of benchmarks/.
    "bench": ["torch"],
  },
)
