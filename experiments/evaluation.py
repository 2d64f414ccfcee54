"""Evaluation of every replica after each epoch: test (and validation) accuracy, and how much of the noisy
labels the model has memorised on a fixed subset of the training set."""

from __future__ import annotations

import jax
import numpy as np

from experiments import data, train_lib
from experiments.mesh import replicate


class Evaluator:
  """The evaluation sets (on the devices, or streamed: the data layer decides) and accuracy bookkeeping."""

  def __init__(self, prog, dataset, noisy, config, val_labels=None):
    """`val_labels`: int [R, n_val], what each replica's predictions on dataset.val are scored against (the
    held-out examples' noisy or clean labels); default: dataset.val's own labels, for every replica."""
    self.prog = prog
    n = len(dataset.train)
    limit = config.train_eval_max_examples or n
    self.train_subset = np.sort(np.random.default_rng(0).permutation(n)[:limit])

    def make(split, indices):
      return data.eval_set(
        dataset, prog.mesh, split.source, indices, prog.eval_batch_size, prog.loop_free, config.data.input_workers
      )

    self.sets = {
      "test": make(dataset.test, np.arange(len(dataset.test))),
      "train": make(dataset.train, self.train_subset),
    }
    if dataset.val is not None:
      self.sets["val"] = make(dataset.val, np.arange(len(dataset.val)))
    self.train_full = lambda: make(dataset.train, np.arange(n))
    self.y_test = dataset.test.labels
    self.y_val = None
    if dataset.val is not None:
      own = np.tile(dataset.val.labels, (len(noisy), 1))
      self.y_val = own if val_labels is None else np.asarray(val_labels)
    self.noisy = np.stack([nl.labels for nl in noisy])
    self.clean = dataset.train.labels
    self.is_noisy = np.stack([nl.is_noisy for nl in noisy])
    self.R = len(noisy)

  def _run(self, fn, state, eval_set, labels):
    outs, start = [], 0
    for x in eval_set:
      outs.append(fn(state, x, replicate(self.prog.mesh, labels[:, start : start + x.shape[0]])))
      start += x.shape[0]
    return jax.tree.map(lambda *o: np.concatenate([np.asarray(a) for a in o], axis=1), *outs)

  def predict(self, state, name):
    eval_set = self.sets[name]
    labels = np.zeros((self.R, eval_set.padded), np.int32)
    pred, _ = self._run(train_lib.eval_fn(self.prog), state, eval_set, labels)
    return pred[:, : eval_set.n]

  def refresh_loss_state(self, state):
    """The loss's `refresh` on the whole training set (eval mode) with each replica's noisy labels."""
    eval_set = self.train_full()
    labels = np.pad(self.noisy, ((0, 0), (0, eval_set.padded - eval_set.n)))
    _, rows = self._run(train_lib.eval_fn(self.prog, refresh=True), state, eval_set, labels)
    return jax.tree.map(lambda r: r[:, : eval_set.n], rows)

  def label_scores(self, state):
    """(predictions int32 [R, N], CE of each replica's training label float32 [R, N]) on the whole training
    set in eval mode: the label audit's pass (experiments/audit.py)."""
    eval_set = self.train_full()
    labels = np.pad(self.noisy, ((0, 0), (0, eval_set.padded - eval_set.n)))
    fn = train_lib.label_scores_fn(self.prog)
    if jax.process_count() > 1:  # the outputs are sharded over the devices of every process
      from jax.experimental import multihost_utils

      fn = lambda *a, f=fn: multihost_utils.process_allgather(f(*a), tiled=True)
    pred, ce = self._run(fn, state, eval_set, labels)
    return pred[:, : eval_set.n], ce[:, : eval_set.n]

  def metrics(self, state) -> dict:
    """{metric: [R]} after an epoch."""
    out = {"test_accuracy": (self.predict(state, "test") == self.y_test).mean(1)}
    if "val" in self.sets:
      out["val_accuracy"] = (self.predict(state, "val") == self.y_val).mean(1)
    pred = self.predict(state, "train")
    sub = self.train_subset
    noisy, clean, is_noisy = self.noisy[:, sub], self.clean[sub], self.is_noisy[:, sub]
    with np.errstate(invalid="ignore", divide="ignore"):
      # Memorisation: accuracy on clean-labelled examples vs how many noisy labels the model has fitted.
      out["train_accuracy_clean_subset"] = ((pred == clean) & ~is_noisy).sum(1) / (~is_noisy).sum(1)
      out["train_memorised_noisy_subset"] = ((pred == noisy) & is_noisy).sum(1) / is_noisy.sum(1)
      out["train_corrected_noisy_subset"] = ((pred == clean) & is_noisy).sum(1) / is_noisy.sum(1)
    return out
