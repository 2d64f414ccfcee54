"""Tests for experiments/splits.py: the stratified noisy validation split and epoch selection."""

import math

import numpy as np
import pytest

from experiments.splits import select_epoch, validation_split


def labels_with_counts(counts, seed=0):
  """Shuffled labels where class c has counts[c] examples."""
  return np.random.default_rng(seed).permutation(np.repeat(np.arange(len(counts)), counts))


# Unbalanced, with an absent class (3), a singleton (5) and a pair (6).
COUNTS = [37, 50, 13, 0, 101, 1, 2, 64, 29, 8]


@pytest.mark.parametrize("fraction", [0.05, 0.1, 0.25, 1 / 3, 0.5, 0.9])
@pytest.mark.parametrize("seed", [0, 1, 12345])
def test_split_is_a_stratified_partition(fraction, seed):
  labels = labels_with_counts(COUNTS)
  N, K = labels.size, len(COUNTS)
  train, val = validation_split(labels, fraction, seed=seed, num_classes=K)
  for idx in (train, val):
    assert idx.dtype == np.int64 and np.all(np.diff(idx) > 0)  # sorted, no repeats
  np.testing.assert_array_equal(np.union1d(train, val), np.arange(N))  # covers all
  assert np.intersect1d(train, val).size == 0  # disjoint
  held = np.bincount(labels[val], minlength=K)
  for c, n_c in enumerate(COUNTS):
    # Within one example of the exact share (1e-9: a float64 product can miss an integer, 0.29 * 100 = 28.99..).
    assert math.floor(fraction * n_c + 1e-9) <= held[c] <= math.ceil(fraction * n_c - 1e-9)
    assert held[c] <= max(n_c - 1, 0)  # every present class keeps a training example
  # The total is fraction * N rounded half up, as far as the per-class bounds allow.
  most = sum(min(math.ceil(fraction * n_c - 1e-9), max(n_c - 1, 0)) for n_c in COUNTS)
  assert val.size == min(math.floor(fraction * N + 0.5), most)
  # On COUNTS the bounds bind only at 0.9 (the singleton and the pair cannot give their shares).
  assert val.size == math.floor(fraction * N + 0.5) or fraction == 0.9


def test_split_caps_keep_every_class_in_train():
  labels = labels_with_counts([1, 2, 2, 3, 100])
  train, val = validation_split(labels, 0.9, seed=0, num_classes=5)
  np.testing.assert_array_equal(np.bincount(labels[train], minlength=5), [1, 1, 1, 1, 10])
  np.testing.assert_array_equal(np.bincount(labels[val], minlength=5), [0, 1, 1, 2, 90])


def test_split_holds_out_the_smallest_keys_of_each_class():
  # Cross-machine determinism: the split is a function of the PCG64 bit stream alone. Generator.random's double
  # is the top 53 bits of a 64-bit draw, times 2**-53; recompute the keys from the raw bits and check that in
  # every class each held-out example has a smaller key than each kept one.
  labels = labels_with_counts(COUNTS, seed=3)
  seed = 2024
  train, val = validation_split(labels, 0.3, seed=seed, num_classes=len(COUNTS))
  keys = (np.random.PCG64(seed).random_raw(labels.size) >> np.uint64(11)).astype(np.float64) * 2.0**-53
  for c in range(len(COUNTS)):
    held, kept = keys[val[labels[val] == c]], keys[train[labels[train] == c]]
    if held.size and kept.size:
      assert held.max() < kept.min()


def test_split_is_seeded():
  labels = labels_with_counts(COUNTS)
  a = validation_split(labels, 0.2, seed=5, num_classes=10)
  b = validation_split(labels.astype(np.int32).tolist(), 0.2, seed=5, num_classes=10)  # any integer input
  c = validation_split(labels, 0.2, seed=6, num_classes=10)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  assert a[1].size == c[1].size and not np.array_equal(a[1], c[1])


def test_remainders_are_shared_out_by_seed_not_by_class_id():
  # 10 classes of 5 at fraction 0.1: each class's share is 0.5, so 5 of the 10 classes give one example. Which
  # five depends on the seed, not on the class ids.
  labels = labels_with_counts([5] * 10)
  chosen = set()
  for seed in range(20):
    _, val = validation_split(labels, 0.1, seed=seed, num_classes=10)
    assert val.size == 5 and np.bincount(labels[val], minlength=10).max() == 1
    chosen.add(tuple(sorted(labels[val])))
  assert len(chosen) > 1


def test_zero_fraction_is_no_split():
  train, val = validation_split(np.array([0, 1, 1, 0]), 0.0, seed=0, num_classes=2)
  np.testing.assert_array_equal(train, np.arange(4))
  assert val.size == 0 and val.dtype == np.int64


@pytest.mark.parametrize(
  "args,kw,match",
  [
    (
      (np.zeros(10, int), 1.0),
      {},
      r"validation fraction=1\.0 must be a number in \[0, 1\) \(0 = no validation split\)",
    ),
    ((np.zeros(10, int), -0.1), {}, r"fraction=-0\.1 must be a number in \[0, 1\)"),
    ((np.zeros(10, int), float("nan")), {}, r"fraction=nan must be"),
    ((np.zeros(10, int), "0.1"), {}, r"fraction='0\.1' must be"),
    ((np.zeros(10, int), True), {}, r"fraction=True must be"),
    ((np.zeros(10, int), 0.1), {"seed": -1}, r"seed=-1 must be an integer >= 0"),
    ((np.zeros(10, int), 0.1), {"seed": 1.5}, r"seed=1\.5 must be an integer >= 0"),
    ((np.zeros(10, int), 0.1), {"num_classes": 0}, r"num_classes=0 must be an integer >= 1"),
    ((np.zeros((5, 2), int), 0.1), {}, r"labels must be a 1-D array of class ids; got shape \(5, 2\)"),
    ((np.zeros(10), 0.1), {}, r"labels must hold integer class ids; got dtype float64"),
    ((np.full(10, 3), 0.1), {}, r"labels have values in \[3, 3\]; valid range is \[0, 2\]"),
    ((np.arange(10) % 3, 0.04), {}, r"fraction=0\.04 holds out no example of the N=10 \(at least 1/\(2N\) = 0\.05"),
    ((np.arange(3), 0.5), {}, r"fraction=0\.5 holds out no example of the N=3 .*every class keeps one training"),
  ],
)
def test_split_errors(args, kw, match):
  with pytest.raises(ValueError, match=match):
    validation_split(*args, **{"seed": 0, "num_classes": 3, **kw})


# --- select_epoch ---


def test_select_epoch_is_one_based_and_ties_go_to_the_earliest():
  assert select_epoch([0.1]) == 1
  assert select_epoch([0.2, 0.5, 0.4]) == 2
  assert select_epoch([0.5, 0.7, 0.7, 0.6, 0.7]) == 2
  assert select_epoch(np.array([0.3, 0.3, 0.3], np.float32)) == 1
  # Equal counts of correct examples give identical accuracies, so ties are exact.
  assert select_epoch([12 / 50, 31 / 50, 31 / 50]) == 2


def test_select_epoch_skips_nan():
  assert select_epoch([float("nan"), 0.4, 0.6, float("nan")]) == 3


@pytest.mark.parametrize(
  "curve,match",
  [
    ([], r"non-empty 1-D sequence .*got shape \(0,\)"),
    ([[0.1, 0.2]], r"non-empty 1-D sequence .*got shape \(1, 2\)"),
    ([float("nan")] * 3, r"no finite value in its 3 epochs"),
  ],
)
def test_select_epoch_errors(curve, match):
  with pytest.raises(ValueError, match=match):
    select_epoch(curve)
