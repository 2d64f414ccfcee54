"""End-to-end training on tiny configs (digits, 4 simulated CPU devices from conftest)."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from configs import digits
from experiments import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny(**overrides):
  c = digits.get_config()
  c.num_epochs = 2
  c.batch_size = 64
  c.eval_batch_size = 64
  c.progress = False
  c.train_eval_max_examples = 0
  for key, value in overrides.items():
    if key.startswith("loss."):
      c.loss[key[5:]] = value
    elif key.startswith("noise."):
      c.noise[key[6:]] = value
    else:
      c[key] = value
  return c


def history(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def assert_same_run(a, b, loss_rtol=0.0, acc_atol=0.0):
  """Same per-epoch metrics; tolerances allow float reduction-order differences (device count)."""
  ha, hb = history(a), history(b)
  assert len(ha) == len(hb)
  for ra, rb in zip(ha, hb):
    np.testing.assert_allclose(ra["train_loss"], rb["train_loss"], rtol=loss_rtol, err_msg="train_loss")
    for key in ("test_accuracy", "train_memorised_noisy_subset", "clipped_fraction"):
      np.testing.assert_allclose(ra[key], rb[key], atol=acc_atol, err_msg=key)


@pytest.mark.parametrize("model, loss", [("small_cnn", "softmax_cross_entropy"),
                                         ("mlp", "binary_cross_entropy_dynamic_clipping")])
def test_one_device_equals_four(tmp_path, model, loss):
  # BatchNorm (small_cnn) and a batch-statistics loss: both must see the global batch. Epoch 1 agrees to
  # float precision; later epochs may drift by reduction order (a few test images of 540).
  cfg = lambda n: tiny(num_devices=n, model=model, **{"loss.name": loss})
  one = train.train_and_evaluate(cfg(1), str(tmp_path / "1"))
  four = train.train_and_evaluate(cfg(4), str(tmp_path / "4"))
  assert one["num_devices"] == 1 and four["num_devices"] == 4
  assert_same_run(tmp_path / "1", tmp_path / "4", loss_rtol=1e-3, acc_atol=0.01)
  np.testing.assert_allclose(history(tmp_path / "1")[0]["train_loss"], history(tmp_path / "4")[0]["train_loss"],
                             rtol=1e-5)
  if loss != "softmax_cross_entropy":
    assert 0 < history(tmp_path / "4")[-1]["clipped_fraction"][0] < 1  # per replica


def test_loop_free_equals_scanned_chunks(tmp_path):
  # One step per call without a while loop (the CPU default for conv models) trains the same model as
  # lax.scan chunks; eval in one-batch calls gives the same predictions. Only fusion order may differ.
  cfg = lambda lf: tiny(model="small_cnn", loop_free=lf, eval_batch_size=32)
  assert train.loop_free(cfg(None), train.models.create("small_cnn", num_classes=10, input_shape=(8, 8, 1)))
  assert not train.loop_free(cfg(None), train.models.create("mlp", num_classes=10, input_shape=(8, 8, 1)))
  train.train_and_evaluate(cfg(True), str(tmp_path / "free"))
  train.train_and_evaluate(cfg(False), str(tmp_path / "scan"))
  assert_same_run(tmp_path / "free", tmp_path / "scan", loss_rtol=1e-3, acc_atol=0.01)


def test_summary_contents(tmp_path):
  s = train.train_and_evaluate(tiny(), str(tmp_path))
  with open(tmp_path / "summary.json") as f:
    on_disk = json.load(f)
  for key in ("test_accuracy_last", "test_accuracy_best", "best_epoch", "noise_rate_realised", "train_seconds",
              "config"):
    assert on_disk[key] is not None, key
  assert on_disk["status"] == "completed" and on_disk["epochs_completed"] == 2
  assert 0.35 < s["noise_rate_realised"] < 0.45  # symmetric 0.4: exact per-class counts, floors
  assert on_disk["config"]["loss"]["name"] == "softmax_cross_entropy"
  assert len(history(tmp_path)) == 2
  assert os.listdir(tmp_path / "tb")


def test_vmapped_seeds_equal_separate_runs(tmp_path):
  together = train.train_and_evaluate(tiny(num_seeds=2, seed=5), str(tmp_path / "both"))
  for r, seed in enumerate((5, 6)):
    alone = train.train_and_evaluate(tiny(seed=seed), str(tmp_path / str(seed)))
    ha, hb = history(tmp_path / "both"), history(tmp_path / str(seed))
    for ra, rb in zip(ha, hb):
      np.testing.assert_allclose(ra["test_accuracy"][r], rb["test_accuracy"][0], atol=1e-6)
      np.testing.assert_allclose(ra["train_memorised_noisy_subset"][r], rb["train_memorised_noisy_subset"][0],
                                 atol=1e-6)
    assert together["per_seed"][r]["noise_rate_realised"] == alone["noise_rate_realised"]
  # Each seed gets its own noise draw.
  assert together["per_seed"][0]["noise"] != together["per_seed"][1]["noise"]


def test_resume_after_losing_the_last_epoch(tmp_path):
  full = tmp_path / "full"
  train.train_and_evaluate(tiny(num_epochs=3), str(full))
  cut = tmp_path / "cut"
  train.train_and_evaluate(tiny(num_epochs=3), str(cut))
  # Simulate a crash during epoch 3: its checkpoint and summary never got written.
  ckpts = sorted(int(d) for d in os.listdir(cut / "checkpoints") if d.isdigit())
  shutil.rmtree(cut / "checkpoints" / str(ckpts[-1]))
  os.remove(cut / "summary.json")
  resumed = train.train_and_evaluate(tiny(num_epochs=3), str(cut))
  assert resumed["epochs_completed"] == 3
  assert_same_run(full, cut)  # exactly


def test_truncated_lq_prunes(tmp_path):
  c = tiny(num_epochs=3, prune_start_epoch=1, prune_every_epochs=1,
           **{"loss.name": "truncated_generalized_cross_entropy", "noise.rate": 0.6})
  train.train_and_evaluate(c, str(tmp_path))
  h = history(tmp_path)
  assert "pruned_fraction" not in h[0] or h[0]["pruned_fraction"][0] == 0.0
  assert 0 < h[-1]["pruned_fraction"][0] < 1


def test_nonfinite_stops_with_step_and_keeps_checkpoint(tmp_path):
  c = tiny(num_epochs=3, learning_rate=1e30, schedule="constant")
  with pytest.raises(train.NonFiniteError, match=r"non-finite loss or gradient at step \d+"):
    train.train_and_evaluate(c, str(tmp_path))
  with open(tmp_path / "summary.json") as f:
    s = json.load(f)
  assert s["status"] == "failed" and "non-finite" in s["error"]


def test_skip_nonfinite_counts(tmp_path):
  c = tiny(num_epochs=1, learning_rate=1e30, schedule="constant", skip_nonfinite=True)
  s = train.train_and_evaluate(c, str(tmp_path))
  assert s["status"] == "completed"
  assert history(tmp_path)[-1]["skipped_steps"][0] > 0


def test_workdir_of_other_config_is_refused_then_moved_aside(tmp_path):
  train.train_and_evaluate(tiny(num_epochs=1), str(tmp_path / "w"))
  with pytest.raises(ValueError, match=r"different config \(learning_rate: 0.05 -> 0.2\)"):
    train.train_and_evaluate(tiny(num_epochs=1, learning_rate=0.2), str(tmp_path / "w"))
  train.train_and_evaluate(tiny(num_epochs=1, learning_rate=0.2, overwrite=True), str(tmp_path / "w"))
  aside = [d for d in os.listdir(tmp_path) if d.startswith("w.old-")]
  assert len(aside) == 1 and os.path.exists(tmp_path / aside[0] / "summary.json")


@pytest.mark.parametrize("overrides, match", [
    ({"noise.rate": 1.5}, r"noise.rate=1.5 is out of range; valid range is \[0, 1\]"),
    ({"noise.kind": "salt"}, r"noise.kind='salt' is unknown"),
    ({"loss.name": "hinge"}, r"loss.name='hinge' is unknown"),
    ({"loss.name": "tamed_cross_entropy", "loss.alpha": -1.0}, r"alpha=-1.0"),
    ({"model": "vit"}, r"model='vit' is unknown"),
    ({"batch_size": 66}, r"batch_size=66 is not divisible by the device count 4"),
    ({"dataset": "imagenet21k"}, r"imagenet21k"),
    ({"noise.kind": "asymmetric", "dataset": "npz", "data_path": "x.npz"}, r"x.npz"),
    ({"schedule": "step"}, r"lr_boundaries"),
    ({"loss.alpha": 2.0}, r"alpha"),  # CE takes no alpha
])
def test_bad_config_rejected_before_compiling(tmp_path, overrides, match):
  with pytest.raises(ValueError, match=match):
    train.train_and_evaluate(tiny(**overrides), str(tmp_path))
  assert not os.path.exists(tmp_path / "checkpoints")


def test_cli_rejects_typo_and_names_valid_keys(tmp_path):
  out = subprocess.run([sys.executable, "-m", "experiments.train", "--config=configs/digits.py",
                        f"--workdir={tmp_path}", "--config.num_epoch=3"], cwd=REPO, capture_output=True,
                       text=True, timeout=120)
  assert out.returncode != 0
  assert "num_epoch" in out.stderr and "num_epochs" in out.stderr


def test_npz_dataset(tmp_path):
  rng = np.random.default_rng(0)
  path = tmp_path / "data.npz"
  np.savez(path, x_train=rng.integers(0, 255, (256, 12, 12), dtype=np.uint8), y_train=rng.integers(0, 3, 256),
           x_test=rng.integers(0, 255, (64, 12, 12), dtype=np.uint8), y_test=rng.integers(0, 3, 64))
  s = train.train_and_evaluate(tiny(dataset="npz", data_path=str(path), num_epochs=1, model="mlp"),
                               str(tmp_path / "run"))
  assert s["status"] == "completed"


def test_tfds_path_with_mock_data(tmp_path, tfds_mock):
  with tfds_mock(num_examples=128):
    s = train.train_and_evaluate(tiny(dataset="mnist", num_epochs=1, model="mlp"), str(tmp_path))
  assert s["status"] == "completed" and 0 <= s["test_accuracy_last"] <= 1
