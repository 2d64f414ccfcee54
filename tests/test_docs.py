"""The documentation is complete and its examples run.

* every public loss has a `References:` and an `Examples:` section, and every docstring example of every
  robust_losses module runs and prints what it shows (doctest);
* the doctest examples of the reference pages (docs/*.rst) run too;
* the API reference documents every name of `robust_losses.__all__` (checked on the rst sources, and on the
  objects inventory of a real `sphinx-build -W` build when Sphinx is installed).
"""

import doctest
import glob
import importlib
import importlib.util
import inspect
import os
import pkgutil
import re
import subprocess
import sys
import zlib

import numpy as np
import pytest

import robust_losses as rl

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(REPO, "docs")
PAGES = sorted(glob.glob(os.path.join(DOCS, "**", "*.rst"), recursive=True))
MODULES = sorted(m.name for m in pkgutil.iter_modules(rl.__path__, "robust_losses."))
# The registry and the training protocol are documented on their own pages; their docstrings describe an
# API rather than a loss from a paper.
NOT_LOSSES = {"get", "names", "hparam_types", "hparam_defaults", "required_hparams", "register"}
NUMBER = re.compile(r"-?\d+(?:\.\d*)?(?:e[+-]?\d+)?")
PRINT_DECIMALS = 4  # the examples print with jnp.set_printoptions(precision=4) or f"{x:.4f}"


def _public_losses():
  return [
    name
    for name in rl.__all__
    if callable(getattr(rl, name)) and not inspect.isclass(getattr(rl, name)) and name not in NOT_LOSSES
  ]


class _Checker(doctest.OutputChecker):
  """Exact comparison first. Otherwise the text between the numbers must match (up to whitespace, which
  numpy's column padding changes) and each number may differ by one unit of the 4th decimal of its mantissa,
  the precision the examples print with: a float32 result within a few ulps of a rounding boundary can print
  either way on another CPU or an accelerator (other exp/log implementations, other reduction orders). The
  example inputs were chosen so that every printed value is at least 13 ulps from a boundary on XLA:CPU."""

  def check_output(self, want, got, optionflags):
    if super().check_output(want, got, optionflags):
      return True
    if NUMBER.sub("#", want).split() != NUMBER.sub("#", got).split():
      return False
    for w, g in zip(NUMBER.findall(want), NUMBER.findall(got)):
      unit = 10.0 ** (int(w.split("e")[1]) - PRINT_DECIMALS) if "e" in w else 10.0**-PRINT_DECIMALS
      if abs(float(w) - float(g)) > unit * (1 + 1e-6):
        return False
    return True


def _run(test):
  runner = doctest.DocTestRunner(checker=_Checker(), optionflags=doctest.ELLIPSIS)
  # Examples set numpy's print precision; restore it so other tests see the defaults.
  with np.printoptions():
    runner.run(test)
  return runner.summarize(verbose=False)


def _doctests(module):
  return [t for t in doctest.DocTestFinder().find(importlib.import_module(module)) if t.examples]


@pytest.mark.parametrize("module", [m for m in MODULES if _doctests(m)])
def test_docstring_examples_run(module):
  failed = sum(_run(t).failed for t in _doctests(module))
  assert failed == 0, f"{failed} docstring example(s) of {module} failed (the report above shows which)"


def test_every_public_loss_has_references_and_a_run_example():
  found = {t.name.rsplit(".", 1)[-1]: t for module in MODULES for t in _doctests(module)}
  problems = []
  for name in _public_losses():
    doc = inspect.getdoc(getattr(rl, name)) or ""
    if "\nReferences:\n" not in doc:
      problems.append(f"{name}: no References: section")
    if "\nExamples:\n" not in doc:
      problems.append(f"{name}: no Examples: section")
    elif name not in found or not any("print(" in e.source for e in found[name].examples):
      problems.append(f"{name}: its Examples are not found by doctest or print nothing")
  assert not problems, problems


@pytest.mark.parametrize("page", [os.path.relpath(p, DOCS) for p in PAGES if ">>> " in open(p).read()])
def test_reference_page_examples_run(page):
  path = os.path.join(DOCS, page)
  test = doctest.DocTestParser().get_doctest(open(path).read(), {}, page, path, 0)
  assert _run(test).failed == 0


def _documented_in_sources():
  """Names given to autofunction/autoclass/autodata in the rst pages, with their current module."""
  names = set()
  for page in PAGES:
    module = None
    for line in open(page):
      m = re.match(r"\.\. (?:currentmodule|automodule|module):: (\S+)", line)
      if m:
        module = m.group(1)
      m = re.match(r"\.\. auto(?:function|class|data|exception):: (\S+)", line)
      if m:
        target = m.group(1)
        names.add(target if target.startswith("robust_losses.") else f"{module}.{target}")
  return names


def test_reference_sources_cover_all_public_names():
  documented = _documented_in_sources()
  missing = sorted(n for n in rl.__all__ if f"robust_losses.{n}" not in documented)
  assert not missing, (
    f"add these to a page under docs/ (`.. autofunction::` after `.. currentmodule:: robust_losses`): {missing}"
  )


def _inventory(path):
  """{object name: role} from a Sphinx objects.inv (version 2: four header lines, then zlib)."""
  with open(path, "rb") as f:
    for _ in range(4):
      f.readline()
    body = zlib.decompress(f.read()).decode()
  entries = {}
  for line in body.splitlines():
    m = re.match(r"(\S+)\s+(\S+):(\S+)\s+(-?\d+)\s+(\S+)\s+(.*)", line)
    if m:
      entries[m.group(1)] = m.group(3)
  return entries


def test_sphinx_builds_without_warnings_and_documents_all_public_names(tmp_path):
  if importlib.util.find_spec("sphinx") is None:
    pytest.skip("Sphinx is not installed (it is in the `docs` and `test` extras: pip install -e '.[docs]')")
  out = tmp_path / "html"
  run = subprocess.run(
    [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-j", "1", "-b", "html", DOCS, str(out)],
    capture_output=True,
    text=True,
    cwd=REPO,
    env={**os.environ, "JAX_PLATFORMS": "cpu"},
    timeout=300,
  )
  assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
  inventory = _inventory(out / "objects.inv")
  missing = sorted(n for n in rl.__all__ if f"robust_losses.{n}" not in inventory)
  assert not missing, f"not in the built reference: {missing}"
  roles = {n: inventory[f"robust_losses.{n}"] for n in rl.__all__}
  assert all(roles[n] == "class" for n in rl.__all__ if inspect.isclass(getattr(rl, n))), roles
  # The docstrings' maths reaches the pages as MathJax input, not as raw reST.
  page = (out / "losses" / "tamed.html").read_text()
  assert 'class="math' in page and ":math:" not in page
