"""The scripts in examples/ run as a user runs them (a fresh Python process from the repository root) and
print what they claim; the README's "Using the losses" snippet is examples/quickstart.py, byte for byte."""

import os
import re
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(REPO, "examples")


def run_example(name, timeout=300):
  # The test process's JAX settings (4 simulated devices, see conftest) must not leak into the script:
  # each example sets up its own devices.
  env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_"))}
  env.update(
    JAX_PLATFORMS="cpu",
    PYTHONPATH=REPO,  # this checkout's robust_losses, whatever copy is installed
    JAX_COMPILATION_CACHE_DIR=os.path.join(REPO, ".pytest_cache", "jax"),
  )
  run = subprocess.run(
    [sys.executable, os.path.join(EXAMPLES, name)], capture_output=True, text=True, cwd=REPO, env=env, timeout=timeout
  )
  assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
  return run.stdout


def readme_quickstart_block():
  readme = open(os.path.join(REPO, "README.md")).read()
  section = readme.split("## Using the losses", 1)[1].split("\n## ", 1)[0]
  blocks = re.findall(r"```python\n(.*?)```", section, re.S)
  assert blocks, "no ```python block in the README's 'Using the losses' section"
  return blocks[0]


def test_readme_snippet_is_the_quickstart_example():
  assert readme_quickstart_block() == open(os.path.join(EXAMPLES, "quickstart.py")).read()


def test_quickstart_runs_and_training_lowers_the_loss():
  out = run_example("quickstart.py")
  names = out.splitlines()[0]
  assert "'tamed_cross_entropy'" in names and "'generalized_cross_entropy'" in names, names
  losses = [float(x) for x in re.findall(r"step \d+: loss (\d+\.\d+)", out)]
  assert len(losses) == 3, out
  # Adam steps on one fixed batch: each step lowers the training loss.
  assert losses[0] > losses[1] > losses[2], losses


def test_own_training_loop_trains_each_loss():
  out = run_example("own_training_loop.py")
  assert "40.0% of 1257 training labels flipped" in out, out
  accuracies = dict(re.findall(r"^\s*(.+?): test accuracy (\d\.\d+) after \d+ epochs", out, re.M))
  assert set(accuracies) == {"CE", "TCE alpha=2", "GCE q=0.7"}, out
  # Ten classes: chance is 0.1. Every loss learns from the 60% clean labels (measured: 0.80 to 0.94).
  assert all(float(a) > 0.5 for a in accuracies.values()), accuracies


def test_dynamic_clipping_shard_map_matches_one_device():
  out = run_example("dynamic_clipping_shard_map.py")
  assert out.startswith("4 devices;"), out
  rows = re.findall(r"^\s*(\w+): clipped (\d+\.\d)% \(1 device\) (\d+\.\d)% \(4 devices\)", out, re.M)
  assert [r[0] for r in rows] == ["gmm", "quantile", "mean_std"], out
  # The batch has 30% flipped labels, and every statistic is set to clip some of them, on 1 and 4 devices.
  assert all(float(one) > 0 and float(four) > 0 for _, one, four in rows), rows
  assert out.rstrip().endswith("the same losses on 1 and 4 devices"), out


def test_stateful_loss_example_keeps_and_refreshes_state():
  out = run_example("stateful_loss.py")
  assert "40.0% of 1257 training labels flipped" in out, out
  assert "early_learning_regularization: example state ['targets']" in out, out
  # prune_start_epoch=10 and the default period of 10 epochs: refreshes at epochs 10, 20 and 30 of 40.
  refreshed = re.findall(r"epoch (\d+): refreshed, (\d+) of 1257 examples kept", out)
  assert [int(e) for e, _ in refreshed] == [10, 20, 30], out
  # k = 0.5 prunes examples whose p_y < 0.5: some but not all (40% of the labels are wrong).
  assert all(0 < int(kept) < 1257 for _, kept in refreshed), refreshed
  accuracies = dict(re.findall(r"^\s*(.+?): test accuracy (\d\.\d+) after \d+ epochs", out, re.M))
  assert set(accuracies) == {"ELR", "truncated Lq"}, out
  assert all(float(a) > 0.5 for a in accuracies.values()), accuracies  # chance is 0.1
