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


def test_explicit_noise_rate_for_a_kind_without_rate_is_an_error(tmp_path):
  p = run(
    "experiments.train",
    "--config=configs/digits.py",
    f"--workdir={tmp_path}",
    "--config.noise.kind=none",
    "--config.noise.rate=0.3",
  )
  assert p.returncode == 2 and "--config.noise.rate=0.3 has no effect for noise.kind='none'" in p.stderr


@pytest.mark.parametrize(
  "what, expect",
  [
    ("losses", "tamed_cross_entropy(alpha="),
    ("models", "resnet20"),
    ("datasets", "digits  (arrays; default augmentation: no crop, no flip)"),
    ("configs", "configs/sweeps/digits.py  [sweep]"),
    ("noise", "asymmetric"),
  ],
)
def test_list_cli(what, expect):
  from experiments import list as listing

  assert any(line.startswith(expect) for line in getattr(listing, what)())


def test_list_cli_usage():
  p = run("experiments.list", "lossses")
  assert p.returncode == 2 and "usage: python -m experiments.list {losses|models|datasets|configs|noise}" in p.stderr


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A real run: digits, 1 epoch, 2 seeds, through the CLI (what a user sees)."""
  workdir = tmp_path_factory.mktemp("run")
  p = run(
    "experiments.train",
    "--config=configs/digits.py",
    f"--workdir={workdir}",
    "--config.num_epochs=1",
    "--config.num_seeds=2",
    "--config.progress=False",
  )
  assert p.returncode == 0, p.stderr[-2000:]
  return workdir, p.stdout


def test_startup_prints_and_records_what_the_run_resolved(trained):
  # Fails without records.setup_info: summary.json recorded model 'auto' and no sizes, classes or augmentation.
  workdir, out = trained
  assert "model: mlp\n" in out  # configs/digits.py picks it
  assert "data: digits, 1257 train / 540 test / 0 validation examples, 10 classes, images 8x8x1" in out
  assert "augmentation: none (data.augment='default': the dataset default)" in out
  assert "noise symmetric:0.4/seed1: realised 0.395 (497 of 1257 training labels changed)" in out
  setup = json.loads((workdir / "summary.json").read_text())["setup"]
  assert setup["model"] == setup["model_config"] == "mlp"
  assert setup["dataset"]["num_train"] == 1257 and setup["augmentation"] == {
    "augment": "default",
    "crop_pad": 0,
    "flip": False,
  }
  assert [n["replica"] for n in setup["noise"]] == ["symmetric:0.4/seed0", "symmetric:0.4/seed1"]


def test_report_cli_tabulates_run_directories(trained, tmp_path):
  # Fails without report.main: there was no CLI for a table across standalone runs.
  workdir, _ = trained
  out = tmp_path / "r.md"
  p = run("experiments.report", str(workdir), "--out", str(out), "--csv", str(tmp_path / "r.csv"))
  assert p.returncode == 0, p.stderr
  md = out.read_text()
  assert "| softmax_cross_entropy |" in md and "symmetric 0.4 (0.40)" in md and "Last epoch" in md
  assert "optimistic oracle" in md
  assert len((tmp_path / "r.csv").read_text().strip().splitlines()) == 3  # header + 2 seeds
  p = run("experiments.report", str(tmp_path / "nope"))
  assert p.returncode == 2 and "not a directory" in p.stderr


def test_auto_model_is_resolved_in_the_setup(trained):
  from experiments import records

  workdir, _ = trained
  setup = json.loads((workdir / "summary.json").read_text())["setup"]
  lines = records.setup_lines(dict(setup, model="small_cnn", model_config="auto"))
  assert lines[0] == "model: small_cnn (model='auto' for 8x8x1 inputs)"


def test_report_cli_puts_the_noisy_validation_tables_first(trained, tmp_path):
  # The real run's summary with issue 21's keys added as its noisy-validation split would write them.
  import shutil

  workdir, _ = trained
  run_dir = tmp_path / "with_selection"
  shutil.copytree(workdir, run_dir, ignore=shutil.ignore_patterns("checkpoints", "tb"))
  s = json.loads((run_dir / "summary.json").read_text())
  for p in s["replicas"]:
    p.update(selected_epoch=1, val_accuracy_selected=0.5, test_accuracy_selected=p["test_accuracy_last"])
  s["selection"] = {"val_fraction": 0.1, "val_labels": "noisy", "ties": "earliest"}
  (run_dir / "summary.json").write_text(json.dumps(s))
  p = run("experiments.report", str(run_dir))
  assert p.returncode == 0, p.stderr
  md = p.stdout
  assert md.index("## Selected epoch (noisy validation)") < md.index("## Last epoch") < md.index("optimistic oracle")
