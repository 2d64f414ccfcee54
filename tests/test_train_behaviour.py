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


def test_best_epoch_is_selected_on_the_validation_set(tmp_path):
  # With these settings (seed 2, 60 % noise) the validation curve peaks at epoch 2 while the test curve
  # peaks at epoch 4 and training ends at epoch 5, so selecting by test accuracy or taking the last epoch
  # would give another answer. The assertions hold for any curves, though.
  val_size, epochs = 150, 5
  c = config(num_epochs=epochs, seed=2, **{"noise.rate": 0.6, "data.val_size": val_size})
  s = train.train_and_evaluate(c, str(tmp_path))
  h = assert_finite_run(tmp_path, epochs)
  val = [r["val_accuracy"][0] for r in h]
  test = [r["test_accuracy"][0] for r in h]
  # The hold-out has val_size examples (accuracies are multiples of 1/150) and is not trained on:
  # (1257 - 150) // 64 = 17 steps per epoch instead of 19.
  assert all(abs(v * val_size - round(v * val_size)) < 1e-6 for v in val)
  assert [r["step"] for r in h] == [17 * e for e in range(1, epochs + 1)]

  on_disk = summary_on_disk(tmp_path)
  best = int(np.argmax(val)) + 1  # first maximum, 1-based
  assert on_disk["best_epoch_selected_by"] == "val_accuracy"
  assert on_disk["best_epoch"] == s["best_epoch"] == best
  assert on_disk["test_accuracy_best"] == pytest.approx(test[best - 1], abs=1e-12)
  assert on_disk["test_accuracy_last"] == pytest.approx(test[-1], abs=1e-12)


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
