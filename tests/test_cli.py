"""The command lines as a user meets them: one-line errors without tracebacks, the closest keys for a typo,
the list CLI and the report CLI."""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(module, *args, env=None):
  e = {k: v for k, v in os.environ.items() if k != "ROBUST_LOSSES_DEBUG"}
  e.update(JAX_PLATFORMS="cpu", **(env or {}))
  return subprocess.run(
    [sys.executable, "-m", module, *args], cwd=REPO, env=e, capture_output=True, text=True, timeout=120
  )


@pytest.mark.parametrize(
  "flag, message",
  [
    ("--config.lr=0.1", "unknown config key 'lr' in --config.lr; closest valid keys: learning_rate"),
    ("--config.data.nme=x", "unknown config key 'data.nme' in --config.data.nme; closest valid keys: data.name"),
    ("--config.num_epochs=0", "error: num_epochs=0 is out of range; valid range is >= 1"),
  ],
)
def test_user_errors_are_one_message_without_traceback(tmp_path, flag, message):
  # Fails without runtime.cli's handling: a 13-82 line traceback ending in AttributeError or ValueError.
  p = run("experiments.train", "--config=configs/digits.py", f"--workdir={tmp_path}", flag)
  assert p.returncode == 2 and message in p.stderr
  assert "Traceback" not in p.stderr + p.stdout and len(p.stderr.strip().splitlines()) <= 2


def test_debug_shows_the_traceback(tmp_path):
  p = run(
    "experiments.train", "--config=configs/digits.py", f"--workdir={tmp_path}", "--config.num_epochs=0", "--debug"
  )
  assert p.returncode != 0 and "Traceback" in p.stderr and "num_epochs=0 is out of range" in p.stderr
  p = run(
    "experiments.train",
    "--config=configs/digits.py",
    f"--workdir={tmp_path}",
    "--config.lr=1",
    env={"ROBUST_LOSSES_DEBUG": "1"},
  )
  assert p.returncode != 0 and "Traceback" in p.stderr
