"""Tests for experiments/noise.py: exact counts, maps, determinism, matrices and every validation error."""

import json
import math

import numpy as np
import pytest

from experiments import noise
from experiments.noise import apply_noise, transition_matrix, validate


def balanced(K, per_class, seed=0):
  """Shuffled labels with exactly per_class samples of each of K classes."""
  return np.random.default_rng(seed).permutation(np.repeat(np.arange(K), per_class)).astype(np.int64)


def unbalanced(K, seed=0):
  """Shuffled labels where class c has 37 + 13*c samples (so floor() matters per class)."""
  return np.random.default_rng(seed).permutation(np.repeat(np.arange(K), 37 + 13 * np.arange(K)))


def check_result(out, clean, K):
  """Invariants every NoisyLabels must satisfy."""
  assert out.labels.dtype == np.int32 and out.clean.dtype == np.int32 and out.is_noisy.dtype == bool
  assert out.labels.shape == out.clean.shape == out.is_noisy.shape == clean.shape
  np.testing.assert_array_equal(out.clean, clean)
  np.testing.assert_array_equal(out.is_noisy, out.labels != clean)
  assert out.rate_realised == pytest.approx(out.is_noisy.mean())
  assert out.transition_realised.shape == (K, K) and out.transition_realised.dtype == np.float64
  np.testing.assert_allclose(out.transition_realised.sum(axis=1), 1.0)
  assert out.labels.min() >= 0 and out.labels.max() < K


# --- exact-count kinds ---


@pytest.mark.parametrize("rate", [0.0, 0.2, 0.29, 0.45, 0.8, 1.0])
def test_symmetric_exact_counts_and_never_same_class(rate):
  K = 7
  clean = unbalanced(K)
  out = apply_noise(clean, kind="symmetric", rate=rate, num_classes=K, seed=1)
  check_result(out, clean, K)
  for c in range(K):
    n_c = int((clean == c).sum())
    assert int(out.is_noisy[clean == c].sum()) == math.floor(rate * n_c + 1e-9)
  # A flipped label always differs from its clean label, so every chosen sample counts as noisy.
  assert not np.any(out.labels[out.is_noisy] == clean[out.is_noisy])


def test_symmetric_targets_cover_all_other_classes():
  K = 5
  clean = balanced(K, 2000)
  out = apply_noise(clean, kind="symmetric", rate=0.5, num_classes=K, seed=0)
  T = out.transition_realised
  off = T[~np.eye(K, dtype=bool)]
  np.testing.assert_allclose(off, 0.5 / (K - 1), atol=0.03)  # uniform over the other classes
  np.testing.assert_allclose(np.diag(T), 0.5)


@pytest.mark.parametrize("rate", [0.1, 0.33, 0.5, 1.0])
def test_pairflip_exact_counts_and_targets(rate):
  K = 6
  clean = unbalanced(K)
  out = apply_noise(clean, kind="pairflip", rate=rate, num_classes=K, seed=3)
  check_result(out, clean, K)
  for c in range(K):
    n_c = int((clean == c).sum())
    assert int(out.is_noisy[clean == c].sum()) == math.floor(rate * n_c + 1e-9)
  np.testing.assert_array_equal(out.labels[out.is_noisy], (clean[out.is_noisy] + 1) % K)


@pytest.mark.parametrize(
  "dataset,K",
  [
    ("cifar10", 10),
    ("cifar10_n", 10),
    ("mnist", 10),
    ("digits", 10),
    ("svhn_cropped", 10),
    ("fashion_mnist", 10),
    ("cifar100", 100),
    ("cifar100_n", 100),
  ],
)
def test_asymmetric_map_applied_exactly(dataset, K):
  rate = 0.4
  clean = unbalanced(K) if K == 10 else balanced(K, 25)
  mapping = noise.asymmetric_map(dataset)
  out = apply_noise(clean, kind="asymmetric", rate=rate, num_classes=K, seed=2, dataset=dataset)
  check_result(out, clean, K)
  for c in range(K):
    in_c = clean == c
    changed = out.labels[in_c] != c
    if c in mapping:
      assert int(changed.sum()) == math.floor(rate * in_c.sum() + 1e-9)
      assert np.all(out.labels[in_c][changed] == mapping[c])  # every flipped sample goes to map[c]
    else:
      assert not changed.any()  # classes outside the map are untouched


def test_asymmetric_known_maps():
  assert noise.asymmetric_map("cifar10") == {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}
  assert noise.asymmetric_map("mnist") == {7: 1, 2: 7, 5: 6, 6: 5, 3: 8}
  assert noise.asymmetric_map("digits") == noise.asymmetric_map("svhn_cropped") == noise.asymmetric_map("mnist")
  assert noise.asymmetric_map("fashion_mnist") == {0: 6, 2: 4, 4: 2, 5: 7, 7: 9}
  assert noise.asymmetric_map("cifar10_n") == noise.asymmetric_map("cifar10")
  assert noise.asymmetric_map("cifar100_n") == noise.asymmetric_map("cifar100")
  # Names are normalised: case, TFDS version and config.
  assert noise.asymmetric_map("CIFAR10:3.0.2") == noise.asymmetric_map("cifar10")
  # A copy: callers cannot corrupt the table.
  noise.asymmetric_map("cifar10")[9] = 0
  assert noise.ASYMMETRIC_MAPS["cifar10"][9] == 1
  for mapping in noise.ASYMMETRIC_MAPS.values():
    assert all(s != t for s, t in mapping.items())


def test_cifar100_coarse_table_and_map():
  coarse = np.asarray(noise.CIFAR100_COARSE)
  assert coarse.shape == (100,)
  np.testing.assert_array_equal(np.bincount(coarse, minlength=20), np.full(20, 5))  # 5 fine per superclass
  m = noise.asymmetric_map("cifar100")
  assert sorted(m) == list(range(100)) and sorted(m.values()) == list(range(100))  # a permutation
  assert all(m[f] != f for f in range(100))  # no fixed points
  assert all(coarse[m[f]] == coarse[f] for f in range(100))  # stays in the true superclass
  # "Next fine id in ascending order within the superclass, wrapping": superclass 4 = {0, 51, 53, 57, 83}.
  assert [m[f] for f in (0, 51, 53, 57, 83)] == [51, 53, 57, 83, 0]
  # Following the map from any class cycles through its whole superclass in 5 steps.
  for f in range(100):
    orbit = [f]
    for _ in range(4):
      orbit.append(m[orbit[-1]])
    assert m[orbit[-1]] == f and len(set(orbit)) == 5


# --- random kinds ---


def test_uniform_realised_rate():
  K, rate = 10, 0.4
  clean = balanced(K, 10_000)
  out = apply_noise(clean, kind="uniform", rate=rate, num_classes=K, seed=0)
  check_result(out, clean, K)
  assert out.rate_realised == pytest.approx(rate * (1 - 1 / K), abs=0.01)
  np.testing.assert_allclose(out.transition_realised, transition_matrix("uniform", rate, num_classes=K), atol=0.02)


def test_matrix_kind_matches_given_matrix():
  T = np.array([[0.7, 0.2, 0.1, 0.0], [0.0, 1.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25], [0.1, 0.0, 0.6, 0.3]])
  clean = balanced(4, 20_000)
  out = apply_noise(clean, kind="matrix", rate=None, num_classes=4, seed=0, matrix=T)
  check_result(out, clean, 4)
  np.testing.assert_allclose(out.transition_realised, T, atol=0.015)
  assert np.all(out.transition_realised[T == 0] == 0)  # zero-probability transitions never happen
  np.testing.assert_array_equal(transition_matrix("matrix", 0.0, num_classes=4, matrix=T), T)


def test_none_kind_is_identity():
  clean = unbalanced(5)
  out = apply_noise(clean, kind="none", rate=0.7, num_classes=5, seed=0)  # rate is ignored
  check_result(out, clean, 5)
  np.testing.assert_array_equal(out.labels, clean)
  assert out.rate_realised == 0.0
  np.testing.assert_array_equal(out.transition_realised, np.eye(5))


def test_absent_classes_have_identity_rows():
  clean = np.array([0, 0, 0, 2, 2, 2, 2])
  out = apply_noise(clean, kind="symmetric", rate=0.5, num_classes=4, seed=0)
  np.testing.assert_array_equal(out.transition_realised[[1, 3]], np.eye(4)[[1, 3]])
  np.testing.assert_allclose(out.transition_realised.sum(axis=1), 1.0)


@pytest.mark.parametrize(
  "kind,kw",
  [
    ("symmetric", {}),
    ("uniform", {}),
    ("pairflip", {}),
    ("asymmetric", {"dataset": "cifar10"}),
    ("matrix", {"matrix": np.full((10, 10), 0.1)}),
  ],
)
def test_determinism(kind, kw):
  clean = balanced(10, 300)
  a = apply_noise(clean, kind=kind, rate=0.4, num_classes=10, seed=123, **kw)
  b = apply_noise(clean, kind=kind, rate=0.4, num_classes=10, seed=123, **kw)
  c = apply_noise(clean, kind=kind, rate=0.4, num_classes=10, seed=124, **kw)
  np.testing.assert_array_equal(a.labels, b.labels)
  assert not np.array_equal(a.labels, c.labels)


def test_input_is_not_modified():
  clean = balanced(10, 50)
  before = clean.copy()
  apply_noise(clean, kind="symmetric", rate=0.5, num_classes=10, seed=0)
  np.testing.assert_array_equal(clean, before)


# --- real labels ---


def test_real_kind_uses_given_labels():
  clean = balanced(10, 100)
  real = clean.copy()
  real[:250] = (real[:250] + 3) % 10
  out = apply_noise(clean, kind="real", rate=None, num_classes=10, seed=0, real_labels=real)
  check_result(out, clean, 10)
  np.testing.assert_array_equal(out.labels, real)
  assert out.rate_realised == pytest.approx(0.25)


@pytest.mark.parametrize(
  "real,match",
  [
    (None, r"needs real_labels="),
    (np.zeros(99, np.int64), r"real_labels has shape \(99,\); expected \(100,\)"),
    (np.zeros((100, 1), np.int64), r"real_labels must be a 1-D array"),
    (np.full(100, 10), r"real_labels has values in \[10, 10\]; valid range is \[0, 9\]"),
    (np.full(100, -1), r"valid range is \[0, 9\]"),
    (np.zeros(100, np.float32), r"real_labels must hold integer class ids"),
  ],
)
def test_real_kind_errors(real, match):
  with pytest.raises(ValueError, match=match):
    apply_noise(balanced(10, 10), kind="real", rate=None, num_classes=10, seed=0, real_labels=real)


def test_clean_label_errors():
  with pytest.raises(ValueError, match=r"clean labels has values in \[0, 5\]; valid range is \[0, 4\]"):
    apply_noise(np.arange(6), kind="symmetric", rate=0.2, num_classes=5, seed=0)
  with pytest.raises(ValueError, match=r"clean labels must be a 1-D array"):
    apply_noise(np.zeros((3, 2), int), kind="none", rate=0.0, num_classes=5, seed=0)


# --- transition_matrix ---


@pytest.mark.parametrize(
  "kind,kw",
  [
    ("none", {}),
    ("symmetric", {}),
    ("uniform", {}),
    ("pairflip", {}),
    ("asymmetric", {"dataset": "cifar10"}),
    ("asymmetric", {"dataset": "fashion_mnist"}),
    ("matrix", {"matrix": np.full((10, 10), 0.1)}),
  ],
)
@pytest.mark.parametrize("rate", [0.0, 0.3, 1.0])
def test_transition_matrix_rows_sum_to_one(kind, kw, rate):
  T = transition_matrix(kind, rate, num_classes=10, **kw)
  assert T.shape == (10, 10) and np.all(T >= 0)
  np.testing.assert_allclose(T.sum(axis=1), 1.0)


def test_transition_matrix_values():
  K, eta = 4, 0.4
  np.testing.assert_allclose(transition_matrix("none", eta, num_classes=K), np.eye(K))
  T = transition_matrix("symmetric", eta, num_classes=K)
  np.testing.assert_allclose(np.diag(T), 1 - eta)
  np.testing.assert_allclose(T[0, 1:], eta / (K - 1))
  np.testing.assert_allclose(transition_matrix("uniform", eta, num_classes=K), (1 - eta) * np.eye(K) + eta / K)
  T = transition_matrix("pairflip", eta, num_classes=K)
  np.testing.assert_allclose(T, (1 - eta) * np.eye(K) + eta * np.roll(np.eye(K), 1, axis=1))
  T = transition_matrix("asymmetric", eta, num_classes=10, dataset="cifar10")
  assert T[9, 9] == pytest.approx(0.6) and T[9, 1] == pytest.approx(0.4)
  assert T[3, 5] == pytest.approx(0.4) and T[5, 3] == pytest.approx(0.4)
  assert T[0, 0] == 1.0 and T[1, 1] == 1.0  # untouched classes
  with pytest.raises(ValueError, match=r"kind='real' has no known transition matrix; estimate it"):
    transition_matrix("real", None, num_classes=10)


@pytest.mark.parametrize("kind,kw", [("symmetric", {}), ("pairflip", {}), ("asymmetric", {"dataset": "mnist"})])
def test_realised_matches_expected_for_exact_kinds(kind, kw):
  # With N_c a multiple of 1/rate the exact-count kinds realise their expected T exactly on the diagonal.
  clean = balanced(10, 500)
  out = apply_noise(clean, kind=kind, rate=0.3, num_classes=10, seed=0, **kw)
  T = transition_matrix(kind, 0.3, num_classes=10, **kw)
  np.testing.assert_allclose(np.diag(out.transition_realised), np.diag(T))
  if kind != "symmetric":
    np.testing.assert_allclose(out.transition_realised, T)


# --- summary ---


def test_summary_is_json_serialisable():
  clean = np.array([0, 0, 0, 0, 2, 2])
  out = apply_noise(clean, kind="pairflip", rate=0.5, num_classes=3, seed=0)
  s = noise.summary(out)
  json.dumps(s, allow_nan=False)  # strict JSON: absent classes are None, not NaN
  assert s["rate_realised"] == pytest.approx(3 / 6)
  assert s["num_noisy"] == 3 and s["num_samples"] == 6 and s["class_counts"] == [4, 0, 2]
  assert s["per_class_flip_rate"] == [0.5, None, 0.5]
  assert s["transition_realised"] == out.transition_realised.tolist()


# --- validate errors ---


@pytest.mark.parametrize(
  "args,kw,match",
  [
    (("gaussian", 0.2), {"num_classes": 10}, r"unknown noise kind='gaussian'; valid kinds: none, symmetric"),
    (("symmetric", 1.5), {"num_classes": 10}, r"noise rate=1\.5 for kind='symmetric' must be a number in \[0, 1\]"),
    (("uniform", -0.1), {"num_classes": 10}, r"noise rate=-0\.1 .* in \[0, 1\]"),
    (("pairflip", float("nan")), {"num_classes": 10}, r"noise rate=nan .* in \[0, 1\]"),
    (("asymmetric", None), {"num_classes": 10, "dataset": "cifar10"}, r"noise rate=None .* in \[0, 1\]"),
    (("symmetric", "0.2"), {"num_classes": 10}, r"noise rate='0\.2' .* in \[0, 1\]"),
    (("symmetric", 0.2), {"num_classes": 0}, r"num_classes=0 must be an integer >= 1"),
    (("symmetric", 0.2), {"num_classes": 10.0}, r"num_classes=10\.0 must be an integer >= 1"),
    (("symmetric", 0.2), {"num_classes": 1}, r"symmetric noise needs num_classes >= 2 \(got 1\)"),
    (("pairflip", 0.0), {"num_classes": 1}, r"pairflip noise needs num_classes >= 2 \(got 1\)"),
    (
      ("asymmetric", 0.2),
      {"num_classes": 10, "dataset": "emnist"},
      r"no class map for dataset='emnist'; datasets with a map: cifar10, cifar100, .*fashion_mnist, mnist",
    ),
    (("asymmetric", 0.2), {"num_classes": 10}, r"no class map for dataset=None; datasets with a map: cifar10"),
    (
      ("asymmetric", 0.2),
      {"num_classes": 10, "dataset": "cifar100"},
      r"asymmetric map of dataset='cifar100' uses class 99, but num_classes=10",
    ),
    (("matrix", None), {"num_classes": 3}, r"kind='matrix' needs matrix="),
    (("matrix", None), {"num_classes": 3, "matrix": np.eye(4)}, r"noise matrix has shape \(4, 4\); expected \(3, 3\)"),
    (
      ("matrix", None),
      {"num_classes": 3, "matrix": [[1, 0, 0], [0, 1, 0]]},
      r"noise matrix has shape \(2, 3\); expected \(3, 3\)",
    ),
    (
      ("matrix", None),
      {"num_classes": 2, "matrix": [[1.5, -0.5], [0, 1]]},
      r"noise matrix has negative entry T\[0, 1\] = -0\.5; entries must be >= 0",
    ),
    (
      ("matrix", None),
      {"num_classes": 2, "matrix": [[1, 0], [0.5, 0.4]]},
      r"noise matrix row 1 sums to 0\.9.*; every row must sum to 1",
    ),
    (("matrix", None), {"num_classes": 2, "matrix": [[np.nan, 0], [0, 1]]}, r"non-finite entries"),
    (("matrix", None), {"num_classes": 2, "matrix": [["a", "b"], ["c", "d"]]}, r"noise matrix is not numeric"),
  ],
)
def test_validate_errors(args, kw, match):
  with pytest.raises(ValueError, match=match):
    validate(*args, **kw)
  # apply_noise validates first, with the same message.
  with pytest.raises(ValueError, match=match):
    apply_noise(np.zeros(4, int), kind=args[0], rate=args[1], seed=0, **kw)


@pytest.mark.parametrize(
  "kind,rate,kw",
  [
    ("none", None, {}),
    ("none", 3.0, {}),
    ("symmetric", 0, {}),
    ("symmetric", 1, {}),
    ("symmetric", 0.0, {"num_classes": 1}),
    ("uniform", np.float32(0.5), {}),
    ("asymmetric", 0.4, {"dataset": "Fashion_MNIST"}),
    ("real", None, {}),
    ("matrix", 5.0, {"matrix": np.eye(10) * (1 - 1e-9) + 1e-10}),
  ],
)
def test_validate_accepts(kind, rate, kw):
  kw = {"num_classes": 10, **kw}
  validate(kind, rate, **kw)
