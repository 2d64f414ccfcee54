"""Tests for experiments/noise.py: exact counts, maps, determinism, matrices and every validation error."""

import hashlib
import json
import math
import os
import re
import subprocess
import sys
import zipfile

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


# --- rate for kinds that ignore it ---


@pytest.mark.parametrize("kind", ["none", "real", "matrix", "file"])
def test_explicit_rate_for_kind_without_rate_is_an_error(kind, tmp_path):
  np.save(tmp_path / "y.npy", np.arange(10))
  kw = {"matrix": {"matrix": np.eye(10)}, "file": {"path": str(tmp_path / "y.npy")}}.get(kind, {})
  match = (
    rf"noise rate=0\.4 has no effect for kind='{kind}': a rate applies only to kinds symmetric, uniform, "
    rf"asymmetric, pairflip; leave it unset \(or 0\) for kind='{kind}'"
  )
  with pytest.raises(ValueError, match=match):
    validate(kind, 0.4, num_classes=10, rate_explicit=True, **kw)
  validate(kind, 0.4, num_classes=10, **kw)  # the config's default rate: ignored, as before
  validate(kind, 0.0, num_classes=10, rate_explicit=True, **kw)
  validate(kind, None, num_classes=10, rate_explicit=True, **kw)
  validate("symmetric", 0.4, num_classes=10, rate_explicit=True)
  assert noise.RATE_KINDS == ("symmetric", "uniform", "asymmetric", "pairflip")
  assert set(noise.RATE_KINDS) < set(noise.KINDS)


# --- noise files ---


def draws(clean, R, kind="symmetric", rate=0.4, K=10):
  """R replicas (setting, seed) with their noisy labels, as the trainer makes them."""
  replicas = [({"kind": kind, "rate": rate}, 7 + r) for r in range(R)]
  return [apply_noise(clean, kind=kind, rate=rate, num_classes=K, seed=s) for _, s in replicas], replicas


def from_file(clean, path, replica=0, num_replicas=1, K=10):
  return apply_noise(
    clean, kind="file", rate=None, num_classes=K, seed=0, path=path, replica=replica, num_replicas=num_replicas
  )


@pytest.mark.parametrize("R", [1, 3])
def test_noise_file_round_trip(tmp_path, R):
  clean = unbalanced(10)
  noisy, replicas = draws(clean, R)
  path = noise.save_noisy_labels(str(tmp_path / noise.NOISE_FILE), noisy, replicas)
  assert path == str(tmp_path / "noisy_labels.npz") and os.listdir(tmp_path) == ["noisy_labels.npz"]
  for r in range(R):
    out = from_file(clean, path, replica=r, num_replicas=R)
    check_result(out, clean, 10)
    np.testing.assert_array_equal(out.labels, noisy[r].labels)
    np.testing.assert_array_equal(out.is_noisy, noisy[r].is_noisy)
    assert out.rate_realised == noisy[r].rate_realised
    np.testing.assert_array_equal(out.transition_realised, noisy[r].transition_realised)
    assert noise.summary(out) == noise.summary(noisy[r])
  # The stored arrays, as another codebase reads them (no pickles).
  with np.load(path, allow_pickle=False) as z:
    assert sorted(z.files) == sorted(noise._OWN_KEYS)
    assert z["noisy_labels"].dtype == np.int32 and z["noisy_labels"].shape == (R, clean.size)
    assert z["is_noisy"].dtype == bool and z["is_noisy"].shape == (R, clean.size)
    np.testing.assert_array_equal(z["is_noisy"], z["noisy_labels"] != clean)
    assert z["noise_kind"].tolist() == ["symmetric"] * R
    np.testing.assert_array_equal(z["noise_rate"], [0.4] * R)
    np.testing.assert_array_equal(z["seed"], [7 + r for r in range(R)])
    np.testing.assert_array_equal(z["rate_realised"], [nl.rate_realised for nl in noisy])
    assert int(z["num_classes"]) == 10 and int(z["num_examples"]) == clean.size
    assert int(z["format_version"]) == noise.FORMAT_VERSION
    assert str(z["clean_sha256"]) == hashlib.sha256(clean.astype("<i4").tobytes()).hexdigest()


def test_noise_file_records_each_replicas_setting(tmp_path):
  clean = balanced(10, 30)
  settings = [{"kind": "symmetric", "rate": 0.2}, {"kind": "none", "rate": 0.4}, {"kind": "real", "rate": 0.4}]
  replicas = [(settings[0], 3), (settings[1], 3), (settings[2], 4)]
  real = (clean + 1) % 10
  noisy = [
    apply_noise(clean, kind=n["kind"], rate=n["rate"], num_classes=10, seed=s, real_labels=real) for n, s in replicas
  ]
  path = noise.save_noisy_labels(tmp_path / "x.npz", noisy, replicas)
  meta = noise.check_noise_file(path).metadata
  assert meta["noise_kind"].tolist() == ["symmetric", "none", "real"]
  # NaN: a rate is not part of the noise model of `none` and `real` (it was the config's default).
  np.testing.assert_array_equal(meta["noise_rate"], [0.2, np.nan, np.nan])
  assert meta["seed"].tolist() == [3, 3, 4]
  np.testing.assert_array_equal(from_file(clean, path, 2, 3).labels, real)


def test_noise_file_one_shared_row_or_one_per_replica(tmp_path):
  clean = balanced(10, 20)
  rows = np.stack([(clean + r) % 10 for r in range(3)])
  np.save(tmp_path / "one.npy", rows[1])  # [N]
  np.save(tmp_path / "one_2d.npy", rows[1:2].astype(np.uint8))  # [1, N], another integer dtype
  np.save(tmp_path / "three.npy", rows)  # [R, N]
  for name in ("one.npy", "one_2d.npy"):
    for r in range(3):
      out = from_file(clean, tmp_path / name, replica=r, num_replicas=3)
      np.testing.assert_array_equal(out.labels, rows[1])
      assert out.labels.dtype == np.int32 and out.rate_realised == 1.0
  for r in range(3):
    out = from_file(clean, tmp_path / "three.npy", replica=r, num_replicas=3)
    np.testing.assert_array_equal(out.labels, rows[r])
    np.testing.assert_array_equal(out.is_noisy, rows[r] != clean)
  with pytest.raises(ValueError, match=r"replica=3 is out of range; valid range is \[0, 2\]"):
    from_file(clean, tmp_path / "three.npy", replica=3, num_replicas=3)


def test_noise_file_npz_made_elsewhere(tmp_path):
  clean = balanced(10, 20)
  noisy = (clean + 3) % 10
  np.savez(tmp_path / "labels.npz", labels=noisy, other=np.zeros(3))
  np.savez(tmp_path / "both.npz", labels=clean, noisy_labels=noisy)  # 'noisy_labels' is preferred
  for name in ("labels.npz", "both.npz"):
    np.testing.assert_array_equal(from_file(clean, tmp_path / name).labels, noisy)
  nf = noise.check_noise_file(tmp_path / "labels.npz", num_examples=clean.size, num_classes=10)
  assert nf.array == "labels" and nf.metadata == {} and nf.labels.shape == (1, clean.size)


def test_noise_file_checked_without_a_dataset(tmp_path):
  # The static checks have only the path, N and K: noise.py needs neither JAX nor the data layer.
  np.save(tmp_path / "y.npy", np.arange(50) % 5)
  code = (
    "import sys; from experiments import noise; "
    f"nf = noise.check_noise_file({str(tmp_path / 'y.npy')!r}, num_examples=50, num_classes=5, num_replicas=2); "
    "assert nf.labels.shape == (1, 50); "
    f"noise.validate('file', None, num_classes=5, path={str(tmp_path / 'y.npy')!r}); "
    "loaded = [m for m in sys.modules if m == 'jax' or m.startswith(('experiments.input', 'experiments.data'))]; "
    "assert not loaded, loaded"
  )
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  subprocess.run([sys.executable, "-c", code], check=True, cwd=root)
  with pytest.raises(ValueError, match=r"holds labels for 50 examples; expected N=49"):
    noise.check_noise_file(tmp_path / "y.npy", num_examples=49, num_classes=5)
  with pytest.raises(ValueError, match=r"valid range is \[0, 3\] for num_classes=4"):
    validate("file", None, num_classes=4, path=str(tmp_path / "y.npy"))


def _bad_files(d):
  """{case: (path, expected message)} for every kind of bad noise file; N = 100, K = 10, R = 3."""
  y = np.arange(100) % 10
  cases = {}

  def npy(name, arr, match):
    np.save(d / name, arr)
    cases[name] = (d / name, match)

  def q(name):
    return re.escape(repr(str(d / name)))

  npy("short.npy", y[:99], q("short.npy") + r" \(its \.npy array\) holds labels for 99 examples; expected N=100")
  npy("transposed.npy", np.stack([y, y, y], 1), r"holds labels for 3 examples; expected N=100.*looks transposed")
  npy("float.npy", y.astype(np.float32), q("float.npy") + r" \(its \.npy array\) has dtype float32; .* integers")
  npy("bool.npy", y > 4, r"has dtype bool; class ids must be integers")
  npy("big.npy", np.where(y == 3, 10, y), r"values in \[0, 10\]; valid range is \[0, 9\] for num_classes=10 .*index 3")
  npy("negative.npy", y - 1, r"values in \[-1, 8\]; valid range is \[0, 9\] .*row 0, index 0, value -1")
  npy("3d.npy", y.reshape(1, 1, 100), r"has shape \(1, 1, 100\); expected \[N\] .* or \[R, N\]")
  npy("scalar.npy", np.int64(3), r"has shape \(\); expected \[N\]")
  npy("empty.npy", np.zeros((0, 100), np.int64), r"has shape \(0, 100\); expected .*non-empty")
  npy("two_rows.npy", np.stack([y, y]), r"has 2 rows; this run trains 3 replica\(s\): give 1 row .* or 3")
  np.savez(d / "key.npz", y=y)
  cases["key.npz"] = (d / "key.npz", q("key.npz") + r" has no array 'noisy_labels' or 'labels'; it holds \['y'\]")
  np.savez(d / "range.npz", labels=y + 1)
  cases["range.npz"] = (d / "range.npz", q("range.npz") + r", array 'labels' has values in \[1, 10\]; valid range")
  cases["missing"] = (d / "missing.npy", q("missing.npy") + " does not exist")
  os.mkdir(d / "dir")
  cases["dir"] = (d / "dir", q("dir") + " is a directory, not a file$")
  os.mkdir(d / "run")
  noise.save_noisy_labels(d / "run" / "noisy_labels.npz", *draws(y, 3))
  cases["run_dir"] = (d / "run", r"is a directory, not a file; did you mean the run's labels .*run/noisy_labels\.npz")
  data = (d / "run" / "noisy_labels.npz").read_bytes()
  (d / "truncated.npz").write_bytes(data[: len(data) // 2])
  # Damage inside the compressed labels: the zip opens, reading the array fails.
  with zipfile.ZipFile(d / "run" / "noisy_labels.npz") as z:
    mid = (z.getinfo("noisy_labels.npy").header_offset + z.getinfo("is_noisy.npy").header_offset) // 2
  (d / "corrupt.npz").write_bytes(data[:mid] + bytes(x ^ 0xFF for x in data[mid : mid + 8]) + data[mid + 8 :])
  cases["corrupt"] = (d / "corrupt.npz", q("corrupt.npz") + r" cannot be read as a \.npy or \.npz \(error: Error -3")
  cases["truncated"] = (d / "truncated.npz", q("truncated.npz") + r" cannot be read as a \.npy or \.npz \(BadZipFile")
  (d / "text.npy").write_text("3 1 4 1 5\n")
  cases["text"] = (d / "text.npy", r"cannot be read as a \.npy or \.npz .*accepted: a run's noisy_labels\.npz")
  np.save(d / "objects.npy", np.array([1, "a"], dtype=object), allow_pickle=True)
  cases["objects"] = (d / "objects.npy", q("objects.npy") + r" cannot be read as a \.npy or \.npz \(ValueError")
  (d / "labels.pt").write_bytes(b"PK\x03\x04")
  cases["pt"] = (
    d / "labels.pt",
    r"\.pt files are not read .*convert it to an \.npz or \.npy as shown in docs/NOISE_FILES\.md",
  )
  cases["no_path"] = ("", r"kind='file' needs path= \(noise\.path")
  return cases


BAD_FILES = (
  "short.npy transposed.npy float.npy bool.npy big.npy negative.npy 3d.npy scalar.npy empty.npy two_rows.npy "
  "key.npz range.npz missing dir run_dir truncated corrupt text objects pt no_path"
).split()


@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_noise_file(tmp_path, case):
  cases = _bad_files(tmp_path)
  assert sorted(cases) == sorted(BAD_FILES)
  path, match = cases[case]
  with pytest.raises(ValueError, match=match):
    noise.check_noise_file(path, num_examples=100, num_classes=10, num_replicas=3)
  # apply_noise checks the file the same way before it uses any label.
  with pytest.raises(ValueError, match=match):
    from_file(np.arange(100) % 10, path, num_replicas=3)


def test_own_noise_file_must_match_the_clean_labels(tmp_path):
  clean = unbalanced(10)
  path = noise.save_noisy_labels(tmp_path / "n.npz", *draws(clean, 1))
  # Another order of the same examples (TFDS and torchvision order CIFAR differently): same N, K and counts.
  reordered = clean[::-1].copy()
  match = (
    re.escape(f"noise file {str(path)!r}, array 'noisy_labels' was written for other clean labels (clean_sha256 ")
    + r"[0-9a-f]{12}\.\.\., this training set's [0-9a-f]{12}\.\.\.\): \d+ of the \d+ labels row 0 marks as not "
    r"flipped differ here \(first at index \d+: \d in the file, \d here\)\. Another dataset, split, hold-out or "
    r"example order\? To apply the labels anyway, save them as a plain \.npy"
  )
  with pytest.raises(ValueError, match=match):
    from_file(reordered, path)
  with pytest.raises(ValueError, match=match):
    noise.check_noise_file(path, num_classes=10, clean_labels=reordered)
  # The way out the message names: the same labels as a plain .npy apply to any labels of that size.
  with np.load(path) as z:
    np.save(tmp_path / "plain.npy", z["noisy_labels"])
  np.testing.assert_array_equal(from_file(reordered, tmp_path / "plain.npy").labels, np.load(path)["noisy_labels"][0])
  with pytest.raises(ValueError, match=r"array 'noisy_labels' was written for num_classes=10; this dataset has 12"):
    noise.check_noise_file(path, num_classes=12)
  with pytest.raises(ValueError, match=rf"array 'noisy_labels' holds labels for {clean.size} examples; expected N=9"):
    noise.check_noise_file(path, num_examples=9)
  with pytest.raises(ValueError, match=r"clean_labels has shape \(9,\); expected \(" + str(clean.size)):
    noise.check_noise_file(path, num_examples=clean.size, clean_labels=clean[:9])


def test_damaged_own_noise_file(tmp_path):
  clean = balanced(5, 4)
  path = noise.save_noisy_labels(tmp_path / "n.npz", *draws(clean, 2, K=5))
  with np.load(path) as z:
    arrays = dict(z)
  np.savez(tmp_path / "v2.npz", **{**arrays, "format_version": np.int64(2)})
  with pytest.raises(ValueError, match=r"array 'noisy_labels': format_version=2; this code reads 1"):
    noise.check_noise_file(tmp_path / "v2.npz")
  np.savez(tmp_path / "lacks.npz", **{k: v for k, v in arrays.items() if k != "clean_sha256"})
  with pytest.raises(ValueError, match=r"has format_version but lacks array\(s\) \['clean_sha256'\]"):
    noise.check_noise_file(tmp_path / "lacks.npz")
  np.savez(tmp_path / "n_mismatch.npz", **{**arrays, "num_examples": np.int64(21)})
  with pytest.raises(ValueError, match=r"has shape \(2, 20\), but the file records num_examples=21 .* damaged"):
    noise.check_noise_file(tmp_path / "n_mismatch.npz")


def test_save_noisy_labels_is_atomic(tmp_path, monkeypatch):
  clean = balanced(10, 10)
  path = tmp_path / noise.NOISE_FILE
  noise.save_noisy_labels(path, *draws(clean, 1))
  before = path.read_bytes()

  # A write that fails half-way leaves the previous file and no temporary file.
  def fail(f, **arrays):
    f.write(b"PK partial")
    raise OSError("disk full")

  monkeypatch.setattr(np, "savez_compressed", fail)
  with pytest.raises(OSError, match="disk full"):
    noise.save_noisy_labels(path, *draws(clean, 3))
  assert path.read_bytes() == before and os.listdir(tmp_path) == [noise.NOISE_FILE]
  monkeypatch.undo()
  noisy, replicas = draws(clean, 3)
  noise.save_noisy_labels(path, noisy, replicas)  # replaces the old file
  np.testing.assert_array_equal(noise.check_noise_file(path).labels, np.stack([nl.labels for nl in noisy]))
  assert os.listdir(tmp_path) == [noise.NOISE_FILE]


def test_save_noisy_labels_errors(tmp_path):
  clean = balanced(10, 10)
  noisy, replicas = draws(clean, 2)
  with pytest.raises(ValueError, match=r"need one \(setting, seed\) per NoisyLabels and at least one; got 2 and 1"):
    noise.save_noisy_labels(tmp_path / "n.npz", noisy, replicas[:1])
  with pytest.raises(ValueError, match=r"got 0 and 0"):
    noise.save_noisy_labels(tmp_path / "n.npz", [], [])
  other = apply_noise(clean[::-1], kind="none", rate=0.0, num_classes=10, seed=0)
  with pytest.raises(ValueError, match=r"replica 1's clean labels or num_classes differ from replica 0's"):
    noise.save_noisy_labels(tmp_path / "n.npz", [noisy[0], other], replicas)
  with pytest.raises(ValueError, match=r"replica 1: noise kind='gauss' is unknown; valid kinds: none, .*, file"):
    noise.save_noisy_labels(tmp_path / "n.npz", noisy, [replicas[0], ({"kind": "gauss", "rate": 0.1}, 0)])
  assert not os.listdir(tmp_path)


def test_file_kind_has_no_known_transition_matrix():
  with pytest.raises(ValueError, match=r"kind='file' has no known transition matrix; estimate it"):
    transition_matrix("file", None, num_classes=10)


def test_npz_made_elsewhere_with_its_clean_labels(tmp_path):
  # CIFAR-N's label file carries the clean labels; saved next to the noisy ones they check the example order.
  clean = unbalanced(10)
  noisy = (clean + 1) % 10
  np.savez(tmp_path / "n.npz", noisy_labels=noisy, clean_labels=clean)
  np.testing.assert_array_equal(from_file(clean, tmp_path / "n.npz").labels, noisy)
  np.testing.assert_array_equal(noise.check_noise_file(tmp_path / "n.npz").clean_labels, clean)
  other_order = np.roll(clean, 1)
  with pytest.raises(
    ValueError,
    match=re.escape(f"noise file {str(tmp_path / 'n.npz')!r}, array 'clean_labels' differs from this training set's")
    + r" labels at \d+ of \d+ examples \(first at index \d+: \d in the file, \d here\): another dataset, split",
  ):
    from_file(other_order, tmp_path / "n.npz")
  np.savez(tmp_path / "bad.npz", noisy_labels=noisy, clean_labels=clean[:-1])
  with pytest.raises(ValueError, match=r"array 'clean_labels' has dtype int64 and shape \(\d+,\); expected integers"):
    noise.check_noise_file(tmp_path / "bad.npz")
