"""Smoke tests of benchmarks/: every benchmark's --quick mode runs and writes its table (no timing checks).

Each runs in a fresh process without the 4-device XLA_FLAGS of conftest, as a user would run it.
"""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

BENCHMARKS = [
  ("losses", [], "losses"),
  ("losses", ["--clipping", "--devices", "4"], "losses-clipping"),
  ("losses", ["--statistics"], "losses-statistics"),
  ("train_step", [], "train_step"),
  ("pipeline", [], "pipeline"),
  ("sweep", [], "sweep"),
  ("scaling", [], "scaling"),
  ("compile", [], "compile"),
  ("device", ["--devices", "2"], "device"),  # 2 simulated devices: the all-device path runs too
]
NEEDS_TORCH = {"train_step", "sweep"}  # their reference side is PyTorch (the `bench` extra, not in `test`)


@pytest.mark.parametrize("name,extra,section", BENCHMARKS, ids=[f"{b[0]}{''.join(b[1][:1])}" for b in BENCHMARKS])
def test_quick_mode(tmp_path, name, extra, section):
  if name in NEEDS_TORCH:
    pytest.importorskip("torch", reason="PyTorch is the benchmark's reference: pip install -e .[bench]")
  out, docs = tmp_path / "out.json", tmp_path / "PERFORMANCE.md"
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  cmd = [sys.executable, "-m", f"benchmarks.{name}", "--quick", *extra, "--json", str(out), "--write-docs", str(docs)]
  proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "|---" in proc.stdout  # a Markdown table was printed
  assert json.loads(out.read_text())
  text = docs.read_text()
  assert f"<!-- bench:{section} -->" in text and f"<!-- /bench:{section} -->" in text
  assert "Command: `python -m benchmarks." in text


def test_docs_section_is_replaced_not_duplicated(tmp_path):
  from benchmarks import _timing

  path = str(tmp_path / "doc.md")
  _timing.update_docs(path, "x", "first")
  _timing.update_docs(path, "y", "other")
  _timing.update_docs(path, "x", "second")
  text = open(path).read()
  assert text.count("<!-- bench:x -->") == 1 and "second" in text and "first" not in text and "other" in text
