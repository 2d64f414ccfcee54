"""robust_losses: noise-robust classification losses in JAX, with Flax experiments.

`pip install .` installs the library alone (the `robust_losses` package, JAX-side requirements only). The
experiments, configs and benchmarks run from the repository root (`python -m experiments.train ...`) and
need the `experiments` extra; `scripts/setup.sh` installs it with the `test` extra.
"""

import os
import re

from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))
README = os.path.join(HERE, "README.md")


def read_version():
  """robust_losses.__version__, read as text: importing the package would need JAX at build time."""
  with open(os.path.join(HERE, "robust_losses", "__init__.py")) as f:
    match = re.search(r'^__version__ = "([^"]+)"$', f.read(), re.M)
  if match is None:
    raise RuntimeError("robust_losses/__init__.py defines no __version__")
  return match.group(1)


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
# The API reference (docs/, `sphinx-build -W -b html docs docs/_build/html`); the version its -W build was
# checked with, since a newer Sphinx can add warnings.
DOCS = ["sphinx==9.0.4"]

setup(
  name="robust_losses",
  version=read_version(),
  description="Noise-robust classification losses for JAX/optax, with data-parallel Flax experiments.",
  long_description=open(README).read() if os.path.exists(README) else "",
  long_description_content_type="text/markdown",
  license="Apache-2.0",
  license_files=["LICENSE"],
  classifiers=[
    "Development Status :: 4 - Beta",
    "Intended Audience :: Science/Research",
    "License :: OSI Approved :: Apache Software License",
    "Operating System :: OS Independent",
    "Programming Language :: Python :: 3",
    "Programming Language :: Python :: 3.11",
    "Programming Language :: Python :: 3.12",
    "Topic :: Scientific/Engineering :: Artificial Intelligence",
    "Typing :: Typed",
  ],
  # jax 0.10 needs Python 3.11.
  python_requires=">=3.11",
  # Only the library: no generic top-level names (experiments, configs, benchmarks) in site-packages.
  packages=["robust_losses"],
  package_data={"robust_losses": ["py.typed"]},
  # Lower bounds only (the README states the versions tested): a cap would keep users' newer JAX out.
  install_requires=[
    "jax>=0.10",
    "jaxlib>=0.10",
    "optax>=0.2.8",
    "numpy",
  ],
  extras_require={
    "experiments": EXPERIMENTS,
    "docs": DOCS,
    "test": EXPERIMENTS + DOCS + ["pytest>=8", "pytest-xdist", "ruff==0.17.6"],
    # PyTorch (CPU build) is only the reference side of benchmarks/.
    "bench": ["torch"],
  },
)
