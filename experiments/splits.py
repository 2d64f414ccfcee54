"""A validation split that needs no clean labels, and the epoch it selects (pure host-side NumPy).

With real label noise there is no clean validation set, so the protocol here holds out part of the training set
WITH ITS NOISY LABELS, after the noise is applied, and selects the epoch with the best accuracy on it. Under
class-conditional noise whose most likely noisy label is the clean one, accuracy on noisy labels is an
increasing function of clean accuracy (for symmetric noise at rate r < (K-1)/K it is
``(1 - r) * acc + r * (1 - acc) / (K - 1)``), so it ranks epochs as clean accuracy does, up to sampling error
(Chen et al., "Understanding and Utilizing Deep Neural Networks Trained with Noisy Labels", ICML 2019).

The split is stratified by the labels it is given. The trainer (settings.validation_split) passes the dataset's
own training labels (the clean ones where the dataset has them; with only noisy labels, those) and config.seed:
then the held-out examples are the same for every replica of a run (seeds × noise settings share one training
set) and for every loss and noise setting of a sweep, so rows differ only in the labels, never in the held-out
set. Each replica is scored on the held-out examples with its own noisy labels. The split depends only on
(labels, fraction, seed, num_classes), so it is the same on any number of devices or processes.
"""

import math
import numbers

import numpy as np

# Exact multiples (0.1 * 30 = 3.0000000000000004, 0.29 * 100 = 28.999999999999996) must floor to the integer.
_EPS = 1e-9


def _show(x):
  return repr(x.item() if isinstance(x, np.generic) else x)


def validation_split(labels, fraction, *, seed, num_classes):
  """Seeded split of ``range(N)`` into ``(train_idx, val_idx)``, stratified by ``labels``.

  Args:
    labels: int [N] class ids in [0, num_classes - 1] to stratify by (which labels: see the module doc).
    fraction: share of the examples to hold out, in [0, 1); 0 gives no split (all of range(N) in train).
    seed: integer >= 0.
    num_classes: K >= 1.

  Returns:
    ``(train_idx, val_idx)``: int64 index arrays, each sorted ascending, disjoint, together ``range(N)``.

  Per class c with n_c examples, ``v_c`` examples are held out, with ``floor(fraction * n_c) <= v_c <=
  ceil(fraction * n_c)`` (within one example of the exact share) and ``v_c <= n_c - 1``: every class keeps at least
  one training example (a class of one example is never held out). The ``v_c`` are the largest-remainder
  apportionment of ``floor(fraction * N + 1/2)`` (ties between equal remainders broken by the seed), so that is
  the held-out total unless the cap binds. Within class c, the ``v_c`` examples with the smallest
  keys ``Generator(PCG64(seed)).random(N)`` are held out.

  Determinism: only the PCG64 bit stream and ``Generator.random``'s conversion of 64-bit draws to doubles are used
  (both fixed since NumPy 1.17), never ``choice``/``permutation``, whose algorithms NumPy may change; and no
  device or process count enters.

  Raises:
    ValueError: fraction outside [0, 1), a bad seed or num_classes, labels not 1-D integers in [0, K-1], or a
      nonzero fraction that holds out no example.

  Examples:
    >>> labels = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    >>> train, val = validation_split(labels, 0.5, seed=0, num_classes=2)
    >>> len(val), np.bincount(labels[val], minlength=2).tolist()
    (5, [2, 3])
  """
  if (
    isinstance(fraction, bool)
    or not isinstance(fraction, numbers.Real)
    or not math.isfinite(fraction)
    or not 0 <= fraction < 1
  ):
    raise ValueError(f"validation fraction={_show(fraction)} must be a number in [0, 1) (0 = no validation split)")
  if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
    raise ValueError(f"seed={_show(seed)} must be an integer >= 0")
  if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 1:
    raise ValueError(f"num_classes={_show(num_classes)} must be an integer >= 1")
  K = int(num_classes)
  labels = np.asarray(labels)
  if labels.ndim != 1:
    raise ValueError(f"labels must be a 1-D array of class ids; got shape {labels.shape}")
  if labels.size and not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f"labels must hold integer class ids; got dtype {labels.dtype}")
  if labels.size and (labels.min() < 0 or labels.max() >= K):
    raise ValueError(f"labels have values in [{labels.min()}, {labels.max()}]; valid range is [0, {K - 1}]")
  N = labels.size
  if fraction == 0:
    return np.arange(N, dtype=np.int64), np.zeros(0, dtype=np.int64)

  rng = np.random.Generator(np.random.PCG64(int(seed)))
  keys = rng.random(N)  # one key per example: its rank among its class's keys decides
  tie_break = rng.random(K)  # order among classes of equal remainder

  counts = np.bincount(labels, minlength=K)
  exact = float(fraction) * counts
  cap = np.maximum(counts - 1, 0)
  held = np.minimum(np.floor(exact + _EPS).astype(np.int64), cap)
  remainder = np.maximum(exact - held, 0.0)
  extra = int(math.floor(float(fraction) * N + 0.5)) - int(held.sum())
  eligible = np.flatnonzero((held < cap) & (remainder > _EPS))
  # Largest remainder first; np.lexsort sorts by its last key first.
  ranked = eligible[np.lexsort((tie_break[eligible], -remainder[eligible]))]
  held[ranked[: max(extra, 0)]] += 1

  # Examples sorted by (class, key): the first held[c] of class c are held out.
  order = np.lexsort((keys, labels))
  sorted_labels = labels[order]
  starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
  rank = np.arange(N) - starts[sorted_labels]
  val = np.zeros(N, dtype=bool)
  val[order[rank < held[sorted_labels]]] = True
  if not val.any():
    raise ValueError(
      f"validation fraction={_show(fraction)} holds out no example of the N={N} (at least 1/(2N) = {0.5 / N:.3g} "
      "is needed, and every class keeps one training example); use a larger fraction, or 0 for no split"
    )
  return np.flatnonzero(~val).astype(np.int64), np.flatnonzero(val).astype(np.int64)


def select_epoch(val_accuracy_curve):
  """The 1-based epoch of the best validation accuracy; ties go to the earliest epoch.

  Why the earliest: networks fit the clean examples first and memorise noisy labels later (Arpit et al., "A
  Closer Look at Memorization in Deep Networks", ICML 2017), so among epochs of equal validation accuracy the
  earliest has fitted the fewest noisy labels. It is also what early stopping returns (the first epoch that
  reached the best score), and ties are common: accuracy on n held-out examples is a multiple of 1/n, and
  equal counts give bit-identical accuracies. NaN entries (an epoch without a finite score) are never selected.

  Args:
    val_accuracy_curve: float [E], the validation accuracy after each of epochs 1..E.

  Returns:
    The epoch in [1, E].

  Examples:
    >>> select_epoch([0.5, 0.7, 0.7, 0.6])
    2
  """
  curve = np.asarray(val_accuracy_curve, dtype=np.float64)
  if curve.ndim != 1 or curve.size == 0:
    raise ValueError(
      f"val_accuracy_curve must be a non-empty 1-D sequence (one value per epoch); got shape {curve.shape}"
    )
  if np.isnan(curve).all():
    raise ValueError(f"val_accuracy_curve has no finite value in its {curve.size} epochs; nothing to select")
  return int(np.nanargmax(curve)) + 1  # nanargmax returns the first of equal maxima
