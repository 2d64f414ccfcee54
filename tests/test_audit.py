"""The label audit (experiments/audit.py): loss ranks, the ranked list and precision/recall at k."""

import csv
import types

import ml_collections
import numpy as np

from experiments import audit


def test_loss_rank_is_one_for_the_highest_loss_of_each_replica():
  losses = np.array([[0.1, 3.0, 0.5, 2.0], [4.0, 0.0, 1.0, 0.2]], np.float32)
  np.testing.assert_array_equal(audit.loss_rank(losses), [[0.25, 1.0, 0.5, 0.75], [1.0, 0.25, 0.75, 0.5]])


def test_ranked_list_and_precision_at_k(tmp_path):
  config = ml_collections.ConfigDict({"num_epochs": 5, "label_audit_epochs": 2})
  assert [e for e in range(5) if audit.due(e, config)] == [3, 4]
  rng = np.random.default_rng(0)
  n = 20
  given = rng.integers(0, 3, n)
  flipped = np.zeros(n, bool)
  flipped[[2, 5, 7, 11]] = True
  # Epoch 4: the flipped examples and example 0 have the largest losses; epoch 5: three of them and 0.
  e4 = rng.uniform(0, 1, (1, n))
  e4[0, [2, 5, 7, 11, 0]] = [5.0, 6.0, 7.0, 8.0, 9.0]
  e5 = rng.uniform(0, 1, (1, n))
  e5[0, [2, 5, 7, 0]] = [5.0, 6.0, 7.0, 9.0]
  predictions = np.zeros((1, n), np.int32)
  audit.record_epoch(str(tmp_path), 3, predictions, e4)
  audit.record_epoch(str(tmp_path), 4, predictions + 1, e5)
  noisy = [types.SimpleNamespace(labels=given, is_noisy=flipped)]
  (entry,) = audit.finish(str(tmp_path), config, noisy, ["symmetric:0.2/seed0"])
  rows = list(csv.DictReader(open(tmp_path / entry["label_audit_file"])))
  assert [int(r["index"]) for r in rows[:4]] == [0, 7, 5, 2]  # mean loss rank, highest first
  assert len(rows) == n and rows[0]["predicted_label"] == "1" and int(rows[0]["given_label"]) == given[0]
  # k = 4 flipped labels; the top 4 hold 3 of them.
  assert entry["label_audit_k"] == 4
  assert entry["label_audit_precision_at_k"] == entry["label_audit_recall_at_k"] == 0.75
  assert entry["label_audit_epochs"] == [4, 5]
  summary = {
    "replicas": [{"replica": "symmetric:0.2/seed0"}],
    "settings": [{"setting": "symmetric:0.2", "seeds": [0]}],
  }
  audit.add_to_summary(summary, [entry])
  assert summary["settings"][0]["label_audit_precision_at_k"] == 0.75


def test_no_flipped_labels_no_precision(tmp_path):
  config = ml_collections.ConfigDict({"num_epochs": 1, "label_audit_epochs": 1})
  audit.record_epoch(str(tmp_path), 0, np.zeros((1, 3), np.int32), np.ones((1, 3), np.float32))
  noisy = [types.SimpleNamespace(labels=np.zeros(3, int), is_noisy=np.zeros(3, bool))]
  (entry,) = audit.finish(str(tmp_path), config, noisy, ["none:0/seed0"])
  assert "label_audit_precision_at_k" not in entry and entry["label_audit_file"]


def test_lists_give_the_dataset_index_after_a_validation_split(tmp_path):
  # With val_fraction the trainer trains on a subset; the list must name examples by their index in the
  # dataset's training set (as noisy_labels.npz does), not by their position in the subset.
  config = ml_collections.ConfigDict({"num_epochs": 1, "label_audit_epochs": 1})
  train_index = np.array([0, 2, 3, 5, 8])
  losses = np.array([[0.1, 0.2, 9.0, 0.3, 0.4]], np.float32)  # the 3rd trained example, dataset index 3
  audit.record_epoch(str(tmp_path), 0, np.zeros((1, 5), np.int32), losses)
  noisy = [types.SimpleNamespace(labels=np.arange(5), is_noisy=np.array([0, 0, 1, 0, 0], bool))]
  (entry,) = audit.finish(str(tmp_path), config, noisy, ["symmetric:0.2/seed0"], train_index)
  rows = list(csv.DictReader(open(tmp_path / entry["label_audit_file"])))
  assert (rows[0]["index"], rows[0]["given_label"]) == ("3", "2")
  assert sorted(int(r["index"]) for r in rows) == train_index.tolist()
