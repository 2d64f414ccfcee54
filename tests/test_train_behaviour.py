"""What training does, seen from outside: train_and_evaluate on the small digits config and the files it writes.

Reuses test_train's `tiny` config (digits, MLP, batch 64, 4 simulated devices) and `history` reader. Each
run is a few epochs of 19 steps: seconds on CPU.
"""

import json
import os

import numpy as np
import pytest
from test_train import history, tiny

from experiments import noise, train

CHANCE = 0.1  # 10 balanced digit classes


def config(**overrides):
  """test_train.tiny(**overrides), but a key the config does not have is an error: tiny's config is not
  locked, so a stale key (e.g. one moved under `loss.`) would be added silently and do nothing."""
  known = tiny()
  for key in overrides:
    group, _, name = key.rpartition(".")
    assert name in (known[group] if group else known), f"config has no key {key!r}"
  return tiny(**overrides)


def summary_on_disk(workdir):
  with open(os.path.join(workdir, "summary.json")) as f:
    return json.load(f)


def assert_finite_run(workdir, epochs):
  h = history(workdir)
  assert [r["epoch"] for r in h] == list(range(1, epochs + 1))
  for r in h:
    for key in ("train_loss", "train_accuracy_noisy_labels", "test_accuracy"):
      assert all(v is not None and np.isfinite(v) for v in r[key]), (r["epoch"], key, r[key])
    assert r["skipped_steps"] == [0]
  return h


@pytest.mark.parametrize("model", ["mlp", "small_cnn"])
def test_bfloat16_training(tmp_path, model):
  # small_cnn adds BatchNorm and convolutions in bfloat16 (its statistics are pmean'ed over 4 devices).
  c = config(compute_dtype="bfloat16", model=model, num_epochs=3, **{"noise.rate": 0.2})
  s = train.train_and_evaluate(c, str(tmp_path))
  h = assert_finite_run(tmp_path, 3)
  assert s["status"] == "completed"
  assert s["test_accuracy_last"] > 0.7 > 5 * CHANCE, s["test_accuracy_last"]
  assert h[-1]["train_loss"][0] < h[0]["train_loss"][0]


@pytest.mark.parametrize("loss", ["forward_corrected_cross_entropy", "backward_corrected_cross_entropy"])
def test_correction_losses_get_the_noise_transition_matrix(tmp_path, loss):
  # Nothing but the loss name is given: the trainer passes the noise model's own transition matrix T
  # (Patrini et al.'s known-T setting). Asymmetric noise: T is far from the identity.
  c = config(num_epochs=4, **{"loss.name": loss, "noise.kind": "asymmetric", "noise.rate": 0.4})
  s = train.train_and_evaluate(c, str(tmp_path / "auto"))
  assert_finite_run(tmp_path / "auto", 4)
  assert s["status"] == "completed" and s["test_accuracy_last"] > 0.6, s["test_accuracy_last"]

  # The same run with that T written into the config explicitly is the same run, step for step.
  T = noise.transition_matrix("asymmetric", 0.4, num_classes=10, dataset="digits")
  assert not np.allclose(T, np.eye(10))
  explicit = config(
    num_epochs=4,
    **{
      "loss.name": loss,
      "noise.kind": "asymmetric",
      "noise.rate": 0.4,
      "loss.transition_matrix": tuple(map(tuple, T.tolist())),
    },
  )
  train.train_and_evaluate(explicit, str(tmp_path / "explicit"))
  for a, b in zip(history(tmp_path / "auto"), history(tmp_path / "explicit")):
    np.testing.assert_allclose(a["train_loss"], b["train_loss"], rtol=1e-6)
    assert a["test_accuracy"] == b["test_accuracy"]


@pytest.mark.parametrize("val_labels", ["noisy", "clean"])
def test_epoch_is_selected_on_the_validation_split(tmp_path, val_labels):
  # 60 % noise, 5 epochs: the assertions hold for any curves (the selected epoch is the argmax of the
  # validation curve, ties to the earliest; best_epoch is the best-TEST oracle).
  epochs = 5
  c = config(num_epochs=epochs, seed=2, val_fraction=0.12, val_labels=val_labels, **{"noise.rate": 0.6})
  s = train.train_and_evaluate(c, str(tmp_path))
  h = assert_finite_run(tmp_path, epochs)
  val = [r["val_accuracy"][0] for r in h]
  test = [r["test_accuracy"][0] for r in h]
  # floor(0.12 * 1257 + 1/2) = 151 held out (accuracies are multiples of 1/151), not trained on:
  # (1257 - 151) // 64 = 17 steps per epoch instead of 19.
  assert all(abs(v * 151 - round(v * 151)) < 1e-6 for v in val)
  assert [r["step"] for r in h] == [17 * e for e in range(1, epochs + 1)]

  on_disk = summary_on_disk(tmp_path)
  chosen = int(np.argmax(val)) + 1  # first maximum, 1-based
  assert on_disk["selection"] == {"val_fraction": 0.12, "val_labels": val_labels, "ties": "earliest"}
  assert on_disk["selected_epoch"] == s["selected_epoch"] == on_disk["replicas"][0]["selected_epoch"] == chosen
  assert on_disk["test_accuracy_selected"] == pytest.approx(test[chosen - 1], abs=1e-12)
  assert on_disk["val_accuracy_selected"] == pytest.approx(val[chosen - 1], abs=1e-12)
  assert on_disk["best_epoch_selected_by"] == "test_accuracy"
  assert on_disk["best_epoch"] == int(np.argmax(test)) + 1
  assert on_disk["test_accuracy_best"] == pytest.approx(max(test), abs=1e-12)
  assert on_disk["test_accuracy_best"] >= on_disk["test_accuracy_selected"]
  assert on_disk["test_accuracy_last"] == pytest.approx(test[-1], abs=1e-12)
  setting = on_disk["settings"][0]
  assert (
    setting["test_accuracy_selected"] == pytest.approx(test[chosen - 1]) and setting["test_accuracy_selected_std"] == 0
  )
  # Scored against the noisy labels, accuracy at 60 % noise is far below the clean test accuracy.
  if val_labels == "noisy":
    assert max(val) < max(test) - 0.2, (val, test)


def test_without_a_validation_split_the_selection_keys_are_absent(tmp_path):
  s = train.train_and_evaluate(config(num_epochs=1), str(tmp_path))
  keys = ("selection", "selected_epoch", "test_accuracy_selected", "val_accuracy_selected")
  assert not any(k in s or k in summary_on_disk(tmp_path) for k in keys)
  assert not any(k in s["replicas"][0] or k in s["settings"][0] for k in keys)
  assert "val_accuracy" not in history(tmp_path)[0]


@pytest.mark.slow  # 6 epochs end to end
def test_clipped_cross_entropy_by_name_alone_warms_up_for_5_epochs(tmp_path):
  # Only the loss name: the trainer passes the epoch, so the default 5-epoch warm-up (the recommended
  # configuration, docs/RESULTS.md) leaves epochs 1-5 unclipped and the mixture statistic clips from epoch 6
  # (40 % symmetric noise: by then the flipped labels are a separate high-loss mode).
  c = config(num_epochs=6, **{"loss.name": "clipped_cross_entropy"})
  train.train_and_evaluate(c, str(tmp_path))
  h = assert_finite_run(tmp_path, 6)
  clipped = [r["clipped_fraction"][0] for r in h]
  assert clipped[:5] == [0.0] * 5, clipped
  assert 0 < clipped[5] < 1, clipped


def test_clipping_warmup_switches_on_after_its_epochs(tmp_path):
  # Dynamic clipping at the 0.9 quantile of the global batch's losses clips about 10 % of each batch, but
  # only once its warm-up epochs are completed (from epoch 3 here); before, the loss is unclipped.
  # (The warm-up was the trainer's `clip_warmup_epochs`; it is now the loss's own `loss.warmup_epochs`.)
  c = config(
    num_epochs=4,
    **{
      "loss.name": "binary_cross_entropy_dynamic_clipping",
      "loss.warmup_epochs": 2,
      "loss.statistic": "quantile",
      "loss.quantile": 0.9,
    },
  )
  train.train_and_evaluate(c, str(tmp_path))
  h = assert_finite_run(tmp_path, 4)
  clipped = [r["clipped_fraction"][0] for r in h]
  assert clipped[0] == 0.0 and clipped[1] == 0.0, clipped
  for fraction in clipped[2:]:
    # 64 losses per batch: 6 or 7 lie above the interpolated 0.9 quantile.
    assert 0.05 < fraction < 0.15, clipped
