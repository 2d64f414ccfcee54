"""Suspected label errors: the training examples whose given label looks wrong, ranked, written per replica.

At each of the last ``config.label_audit_epochs`` epochs the loop runs one eval-mode pass over the whole
training set (`Evaluator.label_scores`) and stores each example's predicted class and its cross entropy w.r.t.
its given (possibly noisy) label in WORKDIR/label_audit/epoch_<e>.npz. At the end of the run every example is
scored by its *loss rank* among the training examples, averaged over those epochs (1 = the highest loss at
every audited epoch), and WORKDIR/suspected_label_errors/replica_<r>.csv lists all examples, highest score
first: ``rank, index, given_label, predicted_label, mean_loss_rank, last_loss``. Where the noise is synthetic
(the run knows which labels its noise model flipped), precision and recall of the top k = number of flipped
labels go to summary.json (per replica, and their mean per noise setting); with k equal to the number of
flipped labels the two are the same number.

Why an eval pass and not an accumulator in the compiled step: the step would have to scatter the global
batch's losses into an [R, N] array replicated on every device (an all-gather of ids and losses per step, and
N floats per replica in every checkpoint), for a statistic of training-mode losses of examples seen once per
epoch under a moving model. An eval pass costs one forward pass over the training set per audited epoch, adds
nothing to the step, scores every example with the same parameters, and is stored in files the resumed run
reads back (an epoch's file is written before its checkpoint, so a resumed run rewrites it identically).
"""

from __future__ import annotations

import csv
import os

import numpy as np

AUDIT_DIR = "label_audit"
OUTPUT_DIR = "suspected_label_errors"


def due(epoch: int, config) -> bool:
  """Whether the audit pass runs after `epoch` (0-based): one of the last `label_audit_epochs` epochs."""
  return config.label_audit_epochs > 0 and epoch >= config.num_epochs - config.label_audit_epochs


def record_epoch(workdir: str, epoch: int, predictions: np.ndarray, losses: np.ndarray) -> None:
  """Stores one audited epoch's predictions int32 [R, N] and given-label CE float32 [R, N]."""
  os.makedirs(os.path.join(workdir, AUDIT_DIR), exist_ok=True)
  path = os.path.join(workdir, AUDIT_DIR, f"epoch_{epoch + 1}.npz")
  tmp = path + ".tmp.npz"
  np.savez(tmp, predictions=predictions.astype(np.int32), losses=losses.astype(np.float32))
  os.replace(tmp, path)


def loss_rank(losses: np.ndarray) -> np.ndarray:
  """[R, N] rank of each example's loss within its replica, scaled to (0, 1]: 1 for the highest loss."""
  order = np.argsort(losses, axis=1, kind="stable")
  ranks = np.empty_like(order)
  np.put_along_axis(ranks, order, np.arange(1, losses.shape[1] + 1)[None], axis=1)
  return ranks / losses.shape[1]


def finish(workdir: str, config, noisy, replica_labels, train_index=None) -> list[dict]:
  """Writes the ranked lists and returns, per replica, the summary entries (precision/recall at k).

  `train_index` maps the examples trained on to their index in the dataset's training set (the examples left
  after a validation split); the lists give that index, the one `noisy_labels.npz` and the data use."""
  epochs = [e for e in range(config.num_epochs) if due(e, config)]
  paths = [os.path.join(workdir, AUDIT_DIR, f"epoch_{e + 1}.npz") for e in epochs]
  paths = [p for p in paths if os.path.exists(p)]
  if not paths:
    return [{} for _ in replica_labels]
  loaded = [np.load(p) for p in paths]
  score = np.mean([loss_rank(d["losses"]) for d in loaded], axis=0)  # [R, N]
  last_loss, predicted = loaded[-1]["losses"], loaded[-1]["predictions"]
  os.makedirs(os.path.join(workdir, OUTPUT_DIR), exist_ok=True)
  index = np.arange(last_loss.shape[-1]) if train_index is None else np.asarray(train_index)
  out = []
  for r, label in enumerate(replica_labels):
    given = noisy[r].labels
    # Highest mean rank first; ties by the last epoch's loss, then by index (a deterministic order).
    order = np.lexsort((np.arange(len(given)), -last_loss[r], -score[r]))
    path = os.path.join(workdir, OUTPUT_DIR, f"replica_{r}.csv")
    with open(path, "w", newline="") as f:
      writer = csv.writer(f)
      writer.writerow(["rank", "index", "given_label", "predicted_label", "mean_loss_rank", "last_loss"])
      for rank, i in enumerate(order, 1):
        writer.writerow(
          [rank, int(index[i]), int(given[i]), int(predicted[r, i]), f"{score[r, i]:.6f}", f"{last_loss[r, i]:.6g}"]
        )
    entry = {
      "label_audit_file": os.path.relpath(path, workdir),
      "label_audit_epochs": [int(os.path.basename(p)[6:-4]) for p in paths],
    }
    flipped = np.asarray(noisy[r].is_noisy, bool)
    k = int(flipped.sum())
    if k:
      hits = int(flipped[order[:k]].sum())
      entry.update({"label_audit_k": k, "label_audit_precision_at_k": hits / k, "label_audit_recall_at_k": hits / k})
    out.append(entry)
  return out


def add_to_summary(summary: dict, entries: list[dict]) -> None:
  """Per-replica entries into summary['replicas'], and the means over each setting's seeds into 'settings'."""
  for replica, entry in zip(summary["replicas"], entries):
    replica.update(entry)
  for setting in summary["settings"]:
    # records.replica_label is '<setting label>/seed<s>'.
    group = [rep for rep in summary["replicas"] if rep["replica"].rsplit("/", 1)[0] == setting["setting"]]
    for key in ("label_audit_precision_at_k", "label_audit_recall_at_k"):
      values = [rep[key] for rep in group if key in rep]
      if values:
        setting[key] = float(np.mean(values))
