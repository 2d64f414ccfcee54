"""The validation split of `val_fraction` in the trainer, epoch selection, and a run's noisy_labels.npz.

Digits MLP runs of 2-3 epochs (test_train's `tiny`), 4 simulated CPU devices (conftest).
"""

import json
import os
import shutil

import numpy as np
import pytest
from cli_runs import cli, coordinator_env, finish, free_port
from test_train import history, tiny

from experiments import data, noise, records, settings, splits, train
from experiments.noise import NoisyLabels

NON_METRICS = ("replica", "noise_kind", "noise_rate", "seed")  # row fields naming the replica, not measuring it


def summary_on_disk(workdir):
  with open(os.path.join(workdir, "summary.json")) as f:
    return json.load(f)


# ------------------------------------------------------------------------------------------- the split
def test_split_is_disjoint_stratified_and_the_same_for_every_run_of_a_sweep():
  base = tiny(val_fraction=0.1)
  ds = data.load(base.data)
  train_idx, val_idx = settings.validation_split(base, ds)
  n, K = len(ds.train), ds.num_classes
  assert not set(train_idx) & set(val_idx) and sorted([*train_idx, *val_idx]) == list(range(n))
  assert len(val_idx) == round(0.1 * n)
  # Stratified: every class holds out its share to within one example.
  held, counts = np.bincount(ds.train.labels[val_idx], minlength=K), np.bincount(ds.train.labels, minlength=K)
  assert np.all(np.abs(held - 0.1 * counts) <= 1), (held, counts)
  # Nothing but the labels, the fraction and config.seed decides: not the devices, the input mode, the loss,
  # the noise or the number of seeds.
  streamed = data.load(base.data, mode="stream")
  assert streamed.mode == "stream"
  for other, dataset in (
    (tiny(val_fraction=0.1, num_devices=1), ds),
    (tiny(val_fraction=0.1), streamed),
    (tiny(val_fraction=0.1, num_seeds=3, **{"loss.name": "generalized_cross_entropy", "noise.rate": 0.8}), ds),
    (tiny(val_fraction=0.1, val_labels="clean", **{"noise.kind": "asymmetric"}), ds),
  ):
    for a, b in zip(settings.validation_split(other, dataset), (train_idx, val_idx)):
      np.testing.assert_array_equal(a, b)
  assert not np.array_equal(settings.validation_split(tiny(val_fraction=0.1, seed=1), ds)[1], val_idx)
  assert settings.validation_split(tiny(), ds) is None


@pytest.mark.parametrize("val_labels", ["noisy", "clean"])
def test_held_out_examples_are_scored_on_the_chosen_labels(val_labels):
  c = tiny(val_fraction=0.2, val_labels=val_labels, num_seeds=2)
  ds = data.load(c.data)
  replicas = [(settings.noise_settings(c)[0], s) for s in (0, 1)]
  noisy = settings.noisy_labels(c, ds, replicas)
  split = settings.validation_split(c, ds)
  held, train_noisy, val_labels_out = settings.hold_out(c, ds, noisy, split)
  train_idx, val_idx = split
  np.testing.assert_array_equal(held.train.source.images, ds.train.source.images[train_idx])
  np.testing.assert_array_equal(held.val.source.images, ds.train.source.images[val_idx])
  for r in range(2):
    want = noisy[r].labels[val_idx] if val_labels == "noisy" else ds.train.labels[val_idx]
    np.testing.assert_array_equal(val_labels_out[r], want)
    # Training keeps the rest of the same noise draw, with its flipped mask and realised rate.
    np.testing.assert_array_equal(train_noisy[r].labels, noisy[r].labels[train_idx])
    np.testing.assert_array_equal(train_noisy[r].is_noisy, noisy[r].is_noisy[train_idx])
    assert train_noisy[r].rate_realised == noisy[r].is_noisy[train_idx].mean()
  if val_labels == "noisy":  # seeds draw different noise, so their held-out labels differ
    assert not np.array_equal(val_labels_out[0], val_labels_out[1])


# --------------------------------------------------------------------------------------------- selection
def _noisy(n=4, K=2):
  y = np.arange(n) % K
  return NoisyLabels(y, y, np.zeros(n, bool), 0.0, np.eye(K))


def test_selection_picks_the_argmax_with_ties_to_the_earliest_epoch():
  c = tiny(val_fraction=0.1)
  replicas = [({"kind": "symmetric", "rate": 0.4}, 0), ({"kind": "symmetric", "rate": 0.4}, 1)]
  val = [[0.5, 0.2], [0.7, None], [0.7, 0.9], [0.6, 0.9]]  # replica 0 ties at epochs 2 and 3; None = NaN
  test = [[0.80, 0.60], [0.85, 0.65], [0.90, 0.70], [0.95, 0.75]]
  history = [{"val_accuracy": v, "test_accuracy": t} for v, t in zip(val, test)]
  selection = {"val_fraction": 0.1, "val_labels": "noisy", "ties": "earliest"}
  s = records.summarise(c, history, [_noisy(), _noisy()], replicas, 1.0, "completed", selection=selection)
  assert [p["selected_epoch"] for p in s["replicas"]] == [2, 3] == s["selected_epoch"]
  assert [p["test_accuracy_selected"] for p in s["replicas"]] == [0.85, 0.70]
  assert [p["val_accuracy_selected"] for p in s["replicas"]] == [0.7, 0.9]
  # best_epoch stays the best-TEST oracle, here the last epoch for both.
  assert [p["best_epoch"] for p in s["replicas"]] == [4, 4] and s["best_epoch_selected_by"] == "test_accuracy"
  assert s["selection"] == selection
  (setting,) = s["settings"]
  assert setting["test_accuracy_selected"] == pytest.approx(0.775)
  assert setting["test_accuracy_selected_std"] == pytest.approx(0.075)
  assert s["test_accuracy_selected"] == setting["test_accuracy_selected"]


# ------------------------------------------------------------------------------- device counts, resume
@pytest.mark.slow
def test_the_split_is_the_same_on_1_and_4_devices_and_streamed(tmp_path):
  runs = {
    "one": tiny(val_fraction=0.1, num_devices=1),
    "four": tiny(val_fraction=0.1),
    "stream": tiny(val_fraction=0.1, steps_per_call=8, **{"data.input": "stream"}),
  }
  for name, c in runs.items():
    train.train_and_evaluate(c, str(tmp_path / name))
  h = {name: history(tmp_path / name) for name in runs}
  for name in runs:
    # The same held-out set: 126 examples, (1257 - 126) // 64 = 17 steps per epoch.
    assert [r["step"] for r in h[name]] == [17, 34]
    assert all(abs(v * 126 - round(v * 126)) < 1e-6 for r in h[name] for v in r["val_accuracy"])
  # Streamed and in-memory runs differ only in XLA fusion (test_streaming: exact accuracies). Across device
  # counts the float32 reduction order differs (test_train.test_one_device_equals_four): 0.01 is one or two
  # of 126 predictions, while another held-out set would move the accuracy by its sampling error (~0.04).
  for a, b in zip(h["four"], h["stream"]):
    np.testing.assert_allclose(a["val_accuracy"], b["val_accuracy"], atol=1e-6)
  for a, b in zip(h["one"], h["four"]):
    np.testing.assert_allclose(a["val_accuracy"], b["val_accuracy"], atol=0.01)


@pytest.mark.slow
def test_two_processes_hold_out_what_one_does(tmp_path):
  # Every process computes the split from the labels on its host; two streaming processes of one device each
  # must train and validate as one process with two devices (test_streaming's two-process comparison).
  flags = ("--config.num_epochs=2", "--config.val_fraction=0.1", "--config.steps_per_call=8")
  single = cli(tmp_path / "one", *flags, "--config.data.input=memory", devices=2)
  port = free_port()
  procs = [
    cli(tmp_path / "two", *flags, "--config.data.input=stream", devices=1, extra_env=coordinator_env(port, i))
    for i in range(2)
  ]
  finish(*procs, single)
  a, b = history(tmp_path / "one"), history(tmp_path / "two")
  assert [r["step"] for r in a] == [r["step"] for r in b] == [17, 34]
  for ra, rb in zip(a, b):
    np.testing.assert_allclose(ra["val_accuracy"], rb["val_accuracy"], atol=1e-6)
  assert summary_on_disk(tmp_path / "two")["num_devices"] == 2


def test_resume_keeps_the_split_the_selection_and_the_noisy_labels(tmp_path):
  c = lambda: tiny(num_epochs=3, val_fraction=0.1)
  full, cut = tmp_path / "full", tmp_path / "cut"
  train.train_and_evaluate(c(), str(full))
  shutil.copytree(full, cut)
  # A crash during epoch 3: its checkpoint and summary never got written.
  steps = sorted(int(d) for d in os.listdir(cut / "checkpoints") if d.isdigit())
  shutil.rmtree(cut / "checkpoints" / str(steps[-1]))
  os.remove(cut / "summary.json")
  before = (cut / noise.NOISE_FILE).read_bytes()
  resumed = train.train_and_evaluate(c(), str(cut))
  assert resumed["epochs_completed"] == 3
  assert (cut / noise.NOISE_FILE).read_bytes() == before  # found equal, not rewritten
  assert history(full) == history(cut)  # exactly, val_accuracy included
  a, b = summary_on_disk(full), summary_on_disk(cut)
  for key in ("selected_epoch", "test_accuracy_selected", "val_accuracy_selected", "selection"):
    assert a[key] == b[key], key

  # A workdir whose labels differ from what the run draws is refused, before anything compiles.
  with np.load(cut / noise.NOISE_FILE) as f:
    arrays = dict(f)
  arrays["noisy_labels"] = (arrays["noisy_labels"] + 1) % 10
  np.savez(cut / noise.NOISE_FILE, **arrays)
  os.remove(cut / "summary.json")
  shutil.rmtree(cut / "checkpoints" / str(steps[-1]))
  with pytest.raises(ValueError, match=r"noisy_labels.npz holds other noisy labels than this run draws"):
    train.train_and_evaluate(c(), str(cut))


# ------------------------------------------------------------------------------------------- noise files
def test_a_run_reloaded_from_its_noisy_labels_reproduces_its_metrics(tmp_path, capsys):
  first = train.train_and_evaluate(tiny(num_seeds=2, val_fraction=0.1), str(tmp_path / "first"))
  path = tmp_path / "first" / noise.NOISE_FILE
  with np.load(path) as f:
    assert f["noisy_labels"].shape == (2, 1257)  # the whole training set, held-out examples included
    assert list(f["seed"]) == [0, 1] and list(f["noise_kind"]) == ["symmetric"] * 2
  again = train.train_and_evaluate(
    tiny(num_seeds=2, val_fraction=0.1, **{"noise.kind": "file", "noise.path": str(path)}), str(tmp_path / "again")
  )
  out = capsys.readouterr().out
  assert "noise file, replica seed 0: realised rate 0.3954" in out and "T[clean, noisy]" in out
  ha, hb = history(tmp_path / "first"), history(tmp_path / "again")
  assert len(ha) == len(hb) == 2
  for ra, rb in zip(ha, hb):
    assert {k: v for k, v in ra.items() if k not in NON_METRICS} == {
      k: v for k, v in rb.items() if k not in NON_METRICS
    }
  for key in ("selected_epoch", "test_accuracy_selected", "test_accuracy_last"):
    assert first[key] == again[key], key
  assert [p["noise"] for p in first["replicas"]] == [p["noise"] for p in again["replicas"]]


def test_one_row_is_shared_by_every_replica(tmp_path):
  c = tiny(num_seeds=2)
  ds = data.load(c.data)
  row = noise.apply_noise(ds.train.labels, kind="pairflip", rate=0.3, num_classes=10, seed=7).labels
  np.save(tmp_path / "labels.npy", row)
  c.noise.kind, c.noise.path = "file", str(tmp_path / "labels.npy")
  replicas = [(settings.noise_settings(c)[0], s) for s in (0, 1)]
  for nl in settings.noisy_labels(c, ds, replicas):
    np.testing.assert_array_equal(nl.labels, row)
    assert nl.rate_realised == pytest.approx(0.3, abs=0.01)


def _bad_files(tmp_path):
  n = 1257
  labels = data.load(tiny().data).train.labels
  cases = {
    "float": (np.zeros(n, np.float32), r"\(its .npy array\) has dtype float32; class ids must be integers"),
    "short": (labels[:-1], r"\(its .npy array\) holds labels for 1256 examples; expected N=1257"),
    "range": (np.where(np.arange(n) == 5, 10, labels), r"valid range is \[0, 9\] for num_classes=10"),
    "rows": (np.stack([labels] * 3), r"has 3 rows; this run trains 1 replica\(s\)"),
  }
  out = []
  for name, (array, match) in cases.items():
    path = str(tmp_path / f"{name}.npy")
    np.save(path, array)
    out.append((path, match))
  npz = str(tmp_path / "range.npz")
  np.savez(npz, labels=np.full(n, -1))
  out.append((npz, r"array 'labels' has values in \[-1, -1\]; valid range is \[0, K-1\]"))
  out.append((str(tmp_path / "missing.npz"), "does not exist"))
  return out


def test_bad_noise_files_fail_before_anything_compiles(tmp_path, monkeypatch):
  def compiled(*args, **kwargs):
    raise AssertionError("compiled a program for a bad noise file")

  monkeypatch.setattr(train, "make_program", compiled)
  for path, match in _bad_files(tmp_path):
    c = tiny(**{"noise.kind": "file", "noise.path": path})
    with pytest.raises(ValueError, match=match) as info:
      train.train_and_evaluate(c, str(tmp_path / "run"))
    assert path in str(info.value)
    assert not os.path.exists(tmp_path / "run" / "checkpoints")


@pytest.mark.parametrize(
  "overrides, match",
  [
    ({"val_fraction": 1.0}, r"val_fraction=1.0 is out of range; valid range is \[0, 1\)"),
    ({"val_fraction": -0.1}, r"val_fraction=-0.1 is out of range"),
    ({"val_fraction": 0.0001}, r"holds out no example"),
    ({"val_labels": "gold"}, r"val_labels='gold' is unknown; valid choices: \['noisy', 'clean'\]"),
    ({"data.val_size": 100}, r"data.val_size=100: the clean hold-out was replaced .*val_fraction"),
    ({"noise.path": "x.npz"}, r"noise.path='x.npz' is read only with noise.kind='file'"),
    ({"noise.kind": "file"}, r"kind='file' needs path="),
    ({"val_fraction": 0.96}, r"batch_size=64 is larger than the training set \(50 examples after holding out"),
  ],
)
def test_bad_split_settings_fail_before_anything_compiles(tmp_path, monkeypatch, overrides, match):
  monkeypatch.setattr(train, "make_program", lambda *a, **k: pytest.fail("compiled"))
  with pytest.raises(ValueError, match=match):
    train.train_and_evaluate(tiny(**overrides), str(tmp_path))


def test_splits_module_is_what_the_trainer_uses():
  # The trainer's split is splits.validation_split on the dataset's labels with config.seed.
  c = tiny(val_fraction=0.25, seed=3)
  ds = data.load(c.data)
  want = splits.validation_split(ds.train.labels, 0.25, seed=3, num_classes=10)
  for a, b in zip(settings.validation_split(c, ds), want):
    np.testing.assert_array_equal(a, b)


def _image_folder(root, sizes):
  from PIL import Image

  rng = np.random.default_rng(0)
  for split, n in sizes.items():
    for i in range(n):
      folder = root / split / f"c{i % 3}"
      folder.mkdir(parents=True, exist_ok=True)
      Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(folder / f"{i}.png")
  return root


def test_a_dataset_with_its_own_validation_split(tmp_path):
  # An image folder with val/: that split is scored on its own labels and selects the epoch; a second split
  # from val_fraction is refused.
  root = _image_folder(tmp_path / "data", {"train": 48, "test": 12, "val": 12})
  over = {"data.name": "image_folder", "data.path": str(root), "data.image_size": 8, "model": "mlp"}
  c = tiny(batch_size=8, eval_batch_size=4, **over)
  s = train.train_and_evaluate(c, str(tmp_path / "run"))
  assert s["selection"] == {"val_fraction": 0.0, "val_labels": "clean", "ties": "earliest", "val_split": "dataset"}
  val = [r["val_accuracy"][0] for r in history(tmp_path / "run")]
  assert s["selected_epoch"] == int(np.argmax(val)) + 1
  with pytest.raises(ValueError, match=r"val_fraction=0.1 would hold out a validation split, but 'image_folder' has"):
    train.train_and_evaluate(tiny(batch_size=8, val_fraction=0.1, **over), str(tmp_path / "other"))
