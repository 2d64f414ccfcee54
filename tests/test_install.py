"""The library installs on its own: `pip install .` in a clean virtual environment brings only JAX-side
requirements and puts no generic top-level package (experiments, configs, benchmarks) in site-packages. The
installed package carries its version, its licence and its type information (py.typed)."""

import json
import os
import re
import shutil
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENT_STACK = (
  "flax",
  "tensorflow-datasets",
  "orbax-checkpoint",
  "ml-collections",
  "scikit-learn",
  "matplotlib",
  "tensorboardx",
  "tqdm",
  "pillow",
  "array-record",
  "chex",
)

SCRIPT = """
import jax, jax.numpy as jnp, numpy as np
import robust_losses as rl
logits = jnp.asarray(np.random.default_rng(0).normal(size=(4, 5)), jnp.float32)
ids = jnp.array([0, 3, 1, 4])
tce = rl.get("tamed_cross_entropy", alpha=2.0)
a, b = tce(logits, ids), tce(logits, jax.nn.one_hot(ids, 5))
assert a.shape == (4,) and np.allclose(a, b, rtol=1e-6), (a, b)
print("ok", float(a.sum()))
"""

METADATA = """
import importlib.metadata, json, robust_losses
meta = importlib.metadata.metadata("robust_losses")
print(json.dumps({
  "version": robust_losses.__version__,
  "dist_version": importlib.metadata.version("robust_losses"),
  "license": meta["License"],
  "classifiers": meta.get_all("Classifier"),
  "files": [str(f) for f in importlib.metadata.files("robust_losses")],
}))
"""


def test_library_installs_alone_in_a_clean_venv(tmp_path):
  src = tmp_path / "src"
  src.mkdir()
  for name in ("setup.py", "README.md", "LICENSE"):
    shutil.copy(os.path.join(REPO, name), src / name)
  shutil.copytree(
    os.path.join(REPO, "robust_losses"), src / "robust_losses", ignore=shutil.ignore_patterns("__pycache__")
  )
  venv = tmp_path / "venv"
  subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
  py = str(venv / "bin" / "python")
  out = subprocess.run([py, "-m", "pip", "install", "-q", str(src)], capture_output=True, text=True, timeout=900)
  assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
  installed = subprocess.run(
    [py, "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True, check=True
  ).stdout.lower()
  names = {line.split("==")[0].replace("_", "-") for line in installed.split()}
  assert {"jax", "jaxlib", "optax", "numpy", "robust-losses"} <= names
  assert not names & set(EXPERIMENT_STACK), sorted(names & set(EXPERIMENT_STACK))
  site = subprocess.run(
    [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], capture_output=True, text=True, check=True
  ).stdout.strip()
  top_level = set(os.listdir(site))
  assert "robust_losses" in top_level
  assert os.path.exists(os.path.join(site, "robust_losses", "py.typed"))
  assert not top_level & {"experiments", "configs", "benchmarks", "tests"}, top_level
  run = subprocess.run(
    [py, "-c", SCRIPT],
    capture_output=True,
    text=True,
    cwd=tmp_path,
    env={**os.environ, "JAX_PLATFORMS": "cpu"},
    timeout=300,
  )
  assert run.returncode == 0 and run.stdout.startswith("ok"), run.stdout + run.stderr
  meta = subprocess.run(
    [py, "-c", METADATA], capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "JAX_PLATFORMS": "cpu"}
  )
  assert meta.returncode == 0, meta.stderr[-3000:]
  meta = json.loads(meta.stdout)
  with open(os.path.join(REPO, "robust_losses", "__init__.py")) as f:
    source_version = re.search(r'^__version__ = "([^"]+)"$', f.read(), re.M).group(1)
  assert meta["version"] == meta["dist_version"] == source_version, meta
  assert meta["license"] == "Apache-2.0", meta
  assert "License :: OSI Approved :: Apache Software License" in meta["classifiers"], meta
  assert any(f.endswith(".dist-info/licenses/LICENSE") for f in meta["files"]), meta["files"]
  assert "robust_losses/py.typed" in meta["files"], meta["files"]
