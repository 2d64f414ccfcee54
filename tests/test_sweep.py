"""Sweep runner: grid expansion, resume, and the table and plot files (tiny grid on digits)."""

import csv
import json
import os

import pytest

from configs.sweeps import digits as digits_sweep
from configs.sweeps import digits_full
from experiments import checkpoints, records, sweep


def tiny_sweep(**overrides):
  s = digits_full.get_config()
  s.only_losses = "CE,TCE α=2,BCE + dyn. clip (q0.9 wu5)"
  s.only_noise = "symmetric:0,symmetric:0.4"
  s.num_seeds = 2
  # 6 epochs: the warm-up row (5 unclipped epochs) must clip in its last one.
  s.base_overrides = {"num_epochs": 6, "progress": False, "train_eval_max_examples": 256}
  for key, value in overrides.items():
    s[key] = value
  return s


def test_grid_expansion():
  main = sweep.expand(digits_sweep.get_config())
  # 14 losses; all 7 noise settings of a loss train together (no noise-model input in this grid).
  assert len(main) == 14 and all(len(r["noises"]) == 7 for r in main)
  full = sweep.expand(digits_full.get_config())
  assert len({r["id"] for r in full}) == 36
  # The main job's rows are the full sweep's, config for config: both can share a workdir.
  by_id = {r["id"]: r["config"] for r in full}
  assert all(checkpoints.config_differences(checkpoints.run_record(by_id[r["id"]]), r["config"]) == [] for r in main)
  runs = sweep.expand(tiny_sweep(group_noise=False))
  assert [r["id"] for r in runs] == [
    "ce__symmetric_0",
    "ce__symmetric_0.4",
    "bce_dyn._clip_q0.9_wu5__symmetric_0",
    "bce_dyn._clip_q0.9_wu5__symmetric_0.4",
    "tce_2__symmetric_0",
    "tce_2__symmetric_0.4",
  ]
  tce = runs[-1]["config"]
  assert tce.loss.name == "tamed_cross_entropy" and tce.loss.alpha == 2.0 and tce.num_seeds == 2
  assert runs[0]["config"].loss.alpha is None  # each run's config is its own copy


def test_grid_errors():
  with pytest.raises(ValueError, match=r"\['nope'\] not in the grid; valid choices"):
    sweep.expand(tiny_sweep(only_losses="nope"))
  with pytest.raises(ValueError, match=r"symmetric:0.3"):
    sweep.expand(tiny_sweep(only_noise="symmetric:0.3"))
  bad = tiny_sweep()
  bad.losses = [dict(bad.losses[0], hparams={"alpha": 1.0})]  # CE takes no alpha
  bad.only_losses = ""
  with pytest.raises(ValueError, match="alpha"):
    sweep.expand(bad)


def test_sweep_writes_tables_plots_and_resumes(tmp_path, capsys):
  s = tiny_sweep(only_losses="CE,BCE + dyn. clip (q0.9 wu5)")
  # A sweep killed after its first run: only CE has finished.
  first = tiny_sweep(only_losses="CE")
  sweep.run(first, str(tmp_path))
  ce_summary = tmp_path / "runs" / "ce" / "summary.json"
  mtime = os.path.getmtime(ce_summary)
  capsys.readouterr()

  sweep.run(s, str(tmp_path))
  out = capsys.readouterr().out
  assert "1 run(s) to train; 4 finished replica(s) already" in out and "] ce:" not in out
  assert os.path.getmtime(ce_summary) == mtime  # never recomputed

  with open(tmp_path / "results.csv") as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 2 * 2 * 2  # losses × noise × seeds
  assert {r["loss"] for r in rows} == {"CE", "BCE + dyn. clip (q0.9 wu5)"}
  assert all(0 <= float(r["test_accuracy_last"]) <= 1 for r in rows)
  md = (tmp_path / "results.md").read_text()
  assert "| CE |" in md and "symmetric 0.4 (0.4" in md and "± " in md
  for name in (
    "accuracy_vs_noise.png",
    "test_accuracy_curves.png",
    "memorisation.png",
    "clipped_fraction.png",
    "accuracy_heatmap.png",
    "clipping_diagnostics.png",
  ):
    assert (tmp_path / "plots" / name).stat().st_size > 10_000, name
  # The warm-up row trains unclipped for 5 epochs, then clips about the top 10% of each batch.
  history = records.read_history(str(tmp_path / "runs" / "bce_dyn._clip_q0.9_wu5"))
  clipped = [h["clipped_fraction"] for h in history]
  assert all(c == [0.0] * 4 for c in clipped[:5])  # 2 noise settings x 2 seeds
  assert all(0.05 < c < 0.15 for c in clipped[5])
  # The diagnostics: precision/recall of the clipped set against the flipped labels, in the report.
  assert "## Clipping diagnostics" in md and "| BCE + dyn. clip (q0.9 wu5) |" in md
  last = history[-1]
  clean, noisy = 0, 2  # replicas: (symmetric 0, seeds 0, 1), (symmetric 0.4, seeds 0, 1)
  assert last["noisy_fraction"][clean] == 0 and last["clipped_recall"][clean] is None  # NaN in JSON
  assert last["clipped_precision"][clean] == 0.0  # everything clipped at no noise is a clean example
  assert 0.3 < last["noisy_fraction"][noisy] < 0.5
  # Clipping the largest losses finds flipped labels far above their base rate.
  assert last["clipped_precision"][noisy] > last["noisy_fraction"][noisy] + 0.2
  assert 0 < last["clipped_recall"][noisy] < 1


def test_a_finished_cell_of_another_config_is_never_reused(tmp_path, capsys):
  sweep.run(tiny_sweep(only_losses="CE", only_noise="symmetric:0.4", num_seeds=1), str(tmp_path))
  changed = tiny_sweep(only_losses="CE", only_noise="symmetric:0.4", num_seeds=1)
  changed.base_overrides = dict(changed.base_overrides, num_epochs=7)
  with pytest.raises(
    checkpoints.ConfigMismatchError,
    match=r"(?s)ce: num_epochs: 6 -> 7.*cannot be continued: schedule='cosine'.*rerun_changed=True",
  ):
    sweep.run(changed, str(tmp_path))
  with open(tmp_path / "runs" / "ce" / "summary.json") as f:
    assert json.load(f)["epochs_completed"] == 6  # the old result is kept
  changed.rerun_changed = True
  sweep.run(changed, str(tmp_path))
  with open(tmp_path / "runs" / "ce" / "summary.json") as f:
    assert json.load(f)["epochs_completed"] == 7
  aside = [d for d in os.listdir(tmp_path / "runs") if d.startswith("ce.old-")]
  assert len(aside) == 1 and os.path.exists(tmp_path / "runs" / aside[0] / "summary.json")  # never deleted
  rows = (tmp_path / "results.csv").read_text()
  assert "ce.old" not in rows


def small_sweep(**overrides):
  """CE and TCE α=2 on digits, 2 epochs, 1 seed: the cheapest sweep that still has two rows."""
  s = tiny_sweep(only_losses="CE,TCE α=2", only_noise="symmetric:0.4", num_seeds=1)
  s.base_overrides = {"num_epochs": 2, "progress": False, "train_eval_max_examples": 64, "schedule": "constant"}
  for key, value in overrides.items():
    s[key] = value
  return s


def _mtimes(tmp_path):
  return {d: os.path.getmtime(tmp_path / "runs" / d / "summary.json") for d in os.listdir(tmp_path / "runs")}


@pytest.mark.slow
def test_sweeps_are_cumulative(tmp_path, capsys):
  """Fails before the cumulative sweep: a CE-only rerun rewrote results.md without TCE, a new noise setting or
  seed was a ConfigMismatchError, and 'symmetric:0.0' was not in the grid."""
  sweep.run(small_sweep(), str(tmp_path))
  assert sorted(os.listdir(tmp_path / "runs")) == ["ce", "tce_2"]
  before = _mtimes(tmp_path)
  sweep.run(small_sweep(only_losses="CE"), str(tmp_path))  # a subset rerun: nothing to train, no row dropped
  assert _mtimes(tmp_path) == before
  md = (tmp_path / "results.md").read_text()
  assert "| TCE α=2 |" in md and "| CE |" in md
  capsys.readouterr()
  # One more noise setting (spelled with a trailing .0) and one more seed: only the new replicas train.
  sweep.run(small_sweep(only_noise="symmetric:0.4,symmetric:0.0", num_seeds=2), str(tmp_path))
  out = capsys.readouterr().out
  assert "4 run(s) to train; 2 finished replica(s) already" in out
  assert {k: v for k, v in _mtimes(tmp_path).items() if k in before} == before  # finished runs untouched
  assert sorted(os.listdir(tmp_path / "runs")) == [
    "ce",
    "ce__symmetric_0",
    "ce__symmetric_0.4__seed1",
    "tce_2",
    "tce_2__symmetric_0",
    "tce_2__symmetric_0.4__seed1",
  ]
  with open(tmp_path / "results.csv") as f:
    rows = list(csv.DictReader(f))
  cells = sorted((r["loss"], float(r["noise_rate"]), int(r["seed"])) for r in rows)
  assert cells == sorted((l, n, s) for l in ("CE", "TCE α=2") for n in (0.0, 0.4) for s in (0, 1))
  # train_seconds_share: a run's time spread over its replicas, so the column sums to the training time.
  summaries = [json.loads((tmp_path / "runs" / d / "summary.json").read_text()) for d in os.listdir(tmp_path / "runs")]
  assert sum(float(r["train_seconds_share"]) for r in rows) == pytest.approx(sum(s["train_seconds"] for s in summaries))


@pytest.mark.slow
def test_failed_cells_are_retried_and_longer_runs_continue(tmp_path, capsys):
  """Fails before the fix: a failed run was 'done already' forever, and num_epochs 2 -> 3 was a
  ConfigMismatchError forcing a rerun from scratch."""
  s = small_sweep(only_losses="CE")
  s.losses = [dict(s.losses[0], overrides={"learning_rate": 1e30})]  # CE diverges in its first steps
  sweep.run(s, str(tmp_path))
  summary = json.loads((tmp_path / "runs" / "ce" / "summary.json").read_text())
  assert summary["status"] == "failed"
  assert "diverged" in (tmp_path / "results.md").read_text()
  capsys.readouterr()
  sweep.run(s, str(tmp_path))
  out = capsys.readouterr().out
  assert "ce: failed last time (non-finite loss" in out and "tried again" in out
  assert len([d for d in os.listdir(tmp_path / "runs") if d.startswith("ce.old-")]) == 1

  ok = small_sweep(only_losses="CE")
  sweep.run(ok, str(tmp_path / "b"))
  longer = small_sweep(only_losses="CE")
  longer.base_overrides = dict(longer.base_overrides, num_epochs=3)
  capsys.readouterr()
  sweep.run(longer, str(tmp_path / "b"))
  out = capsys.readouterr().out
  assert "Continuing the 2-epoch run" in out and "Resuming from step" in out
  summary = json.loads((tmp_path / "b" / "runs" / "ce" / "summary.json").read_text())
  assert summary["status"] == "completed" and summary["epochs_completed"] == 3
