"""Synthetic and real label-noise models, applied once per run on the host (pure NumPy).

Kinds (``KINDS``):

- ``none``: labels unchanged; ``rate`` is ignored.
- ``symmetric`` (APL/SCE convention): in each class ``c`` exactly ``floor(rate * N_c)`` labels, chosen uniformly
  without replacement, are flipped to a uniformly chosen *other* class.
- ``uniform`` (DivideMix convention): each label is, with probability ``rate``, redrawn uniformly over all ``K``
  classes (it may land on itself, so the realised rate is about ``rate * (1 - 1/K)``).
- ``asymmetric``: for each source class ``c`` of the dataset's map (``ASYMMETRIC_MAPS``), exactly
  ``floor(rate * N_c)`` samples of class ``c`` get ``map[c]``. Samples are selected by their *clean* label, so
  swaps (cat<->dog) and chains (2->7->1) flip each sample at most once.
- ``pairflip``: exactly ``floor(rate * N_c)`` samples of class ``c`` get ``(c + 1) mod K``.
- ``matrix``: each sample of clean class ``i`` gets a label drawn from row ``i`` of a given row-stochastic
  matrix ``T[i, j] = P(noisy = j | clean = i)``; ``rate`` is ignored.
- ``real``: the human/web labels supplied by the dataset loader (e.g. CIFAR-10N ``aggre_label``) are used as
  they are; ``rate`` is ignored.

Every run should log ``summary(noisy)``: the realised rate differs from the nominal one (floor, ``uniform``
self-draws, asymmetric maps touching only some classes).
"""

import dataclasses
import math
import numbers

import numpy as np

KINDS = ("none", "symmetric", "uniform", "asymmetric", "pairflip", "matrix", "real")

# Kinds whose noise level is set by `rate`; the others ignore it entirely.
_RATE_KINDS = ("symmetric", "uniform", "asymmetric", "pairflip")

# Tolerance for "rows sum to 1" of user matrices (configs written by hand, e.g. 0.1 + 0.2 + 0.7).
_ROW_SUM_ATOL = 1e-6

# --- Asymmetric maps ------------------------------------------------------------------------------------------

# CIFAR-10 (Patrini et al. 2017, used by GCE/SCE/APL): truck->automobile, bird->airplane, deer->horse, cat<->dog.
_CIFAR10_MAP = {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}

# MNIST (same papers): 7->1, 2->7, 5<->6, 3->8.
# SVHN (TFDS `svhn_cropped`, labels 0-9 are the digits themselves) and sklearn `digits` reuse it: our choice,
# as the confusions are between digit shapes, not datasets.
_DIGITS_MAP = {7: 1, 2: 7, 5: 6, 6: 5, 3: 8}

# Fashion-MNIST has no agreed map in the literature. OUR choice, between classes that trained models confuse
# most, with five source classes like the CIFAR-10 and MNIST maps (so the overall rate is about rate/2 on
# balanced data): T-shirt/top(0)->Shirt(6), Pullover(2)<->Coat(4), Sandal(5)->Sneaker(7),
# Sneaker(7)->Ankle boot(9). Trouser, Dress, Shirt, Bag and Ankle boot are never sources.
_FASHION_MNIST_MAP = {0: 6, 2: 4, 4: 2, 5: 7, 7: 9}

# CIFAR-100 fine label -> coarse (superclass) label, standard dataset ordering (20 superclasses of 5).
CIFAR100_COARSE = (
  4,
  1,
  14,
  8,
  0,
  6,
  7,
  7,
  18,
  3,
  3,
  14,
  9,
  18,
  7,
  11,
  3,
  9,
  7,
  11,
  6,
  11,
  5,
  10,
  7,
  6,
  13,
  15,
  3,
  15,
  0,
  11,
  1,
  10,
  12,
  14,
  16,
  9,
  11,
  5,
  5,
  19,
  8,
  8,
  15,
  13,
  14,
  17,
  18,
  10,
  16,
  4,
  17,
  4,
  2,
  0,
  17,
  4,
  18,
  17,
  10,
  3,
  2,
  12,
  12,
  16,
  12,
  1,
  9,
  19,
  2,
  10,
  0,
  1,
  16,
  12,
  9,
  13,
  15,
  13,
  16,
  19,
  2,
  4,
  6,
  19,
  5,
  5,
  8,
  19,
  18,
  1,
  2,
  15,
  6,
  0,
  17,
  8,
  14,
  13,
)


def _cifar100_map():
  """Each fine class -> the next fine id (ascending, circular) among the 5 fine classes of its superclass."""
  mapping = {}
  for coarse in sorted(set(CIFAR100_COARSE)):
    fine = [f for f, c in enumerate(CIFAR100_COARSE) if c == coarse]
    for k, f in enumerate(fine):
      mapping[f] = fine[(k + 1) % len(fine)]
  return mapping


_CIFAR100_MAP = _cifar100_map()

ASYMMETRIC_MAPS = {
  "cifar10": _CIFAR10_MAP,
  "cifar10_n": _CIFAR10_MAP,  # CIFAR-10N: same images and classes as CIFAR-10
  "cifar100": _CIFAR100_MAP,
  "cifar100_n": _CIFAR100_MAP,  # CIFAR-100N: same images and classes as CIFAR-100
  "mnist": _DIGITS_MAP,
  "digits": _DIGITS_MAP,
  "svhn_cropped": _DIGITS_MAP,
  "fashion_mnist": _FASHION_MNIST_MAP,
}


def _dataset_key(dataset):
  """Lower-cased dataset name without a TFDS version or config ('cifar10:3.0.2' -> 'cifar10')."""
  if dataset is None:
    return None
  return str(dataset).strip().lower().split(":")[0].split("/")[0]


def asymmetric_map(dataset):
  """Return a copy of the asymmetric map {source class: target class} of ``dataset``."""
  key = _dataset_key(dataset)
  if key not in ASYMMETRIC_MAPS:
    raise ValueError(
      f"asymmetric noise has no class map for dataset={dataset!r}; datasets with a map: "
      f"{', '.join(sorted(ASYMMETRIC_MAPS))} (use kind='matrix' for others)"
    )
  return dict(ASYMMETRIC_MAPS[key])


# --- Result -----------------------------------------------------------------------------------------------------


# eq=False: the generated __eq__/__hash__ would compare numpy arrays, which raises.
@dataclasses.dataclass(frozen=True, eq=False)
class NoisyLabels:
  """Labels used for training, with what is needed to log and diagnose the noise that was applied."""

  labels: np.ndarray  # int32 [N] noisy labels actually used for training
  clean: np.ndarray  # int32 [N] clean labels (diagnostics only)
  is_noisy: np.ndarray  # bool [N] labels != clean
  rate_realised: float  # mean(is_noisy)
  transition_realised: np.ndarray  # float64 [K, K] empirical P(noisy=j | clean=i); absent classes: identity rows


# --- Validation -------------------------------------------------------------------------------------------------


def _show(x):
  """repr() of a config value, without numpy's scalar wrapper (np.float64(2.0) -> 2.0)."""
  return repr(x.item() if isinstance(x, np.generic) else x)


def validate(kind, rate, *, num_classes, dataset=None, matrix=None):
  """Check a noise configuration; raise ValueError naming the bad value and what is allowed.

  Cheap and host-only, so the trainer calls it before compiling anything. ``rate`` is checked only for kinds
  that use it (``symmetric``, ``uniform``, ``asymmetric``, ``pairflip``).
  """
  if kind not in KINDS:
    raise ValueError(f"unknown noise kind={kind!r}; valid kinds: {', '.join(KINDS)}")
  if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 1:
    raise ValueError(f"num_classes={_show(num_classes)} must be an integer >= 1")
  K = int(num_classes)

  if kind in _RATE_KINDS:
    if (
      isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not math.isfinite(rate) or not 0.0 <= rate <= 1.0
    ):
      raise ValueError(f"noise rate={_show(rate)} for kind={kind!r} must be a number in [0, 1]")

  if kind == "symmetric" and K < 2 and rate > 0:
    raise ValueError(f"symmetric noise needs num_classes >= 2 (got {K}): there is no other class to flip to")
  if kind == "pairflip" and K < 2:
    raise ValueError(f"pairflip noise needs num_classes >= 2 (got {K})")
  if kind == "asymmetric":
    mapping = asymmetric_map(dataset)
    top = max(max(mapping), max(mapping.values()))
    if top >= K:
      raise ValueError(f"asymmetric map of dataset={dataset!r} uses class {top}, but num_classes={K}")
  if kind == "matrix":
    _check_matrix(matrix, K)


def _check_matrix(matrix, K):
  """Raise ValueError unless ``matrix`` is a finite, non-negative, row-stochastic K x K array."""
  if matrix is None:
    raise ValueError("kind='matrix' needs matrix= (a row-stochastic [K, K] array, T[i, j] = P(noisy j | clean i))")
  try:
    T = np.asarray(matrix, dtype=np.float64)
  except (TypeError, ValueError) as e:
    raise ValueError(f"noise matrix is not numeric: {e}") from None
  if T.shape != (K, K):
    raise ValueError(f"noise matrix has shape {T.shape}; expected ({K}, {K}) for num_classes={K}")
  if not np.all(np.isfinite(T)):
    raise ValueError("noise matrix has non-finite entries; entries must be finite probabilities")
  if np.any(T < 0):
    i, j = np.argwhere(T < 0)[0]
    raise ValueError(f"noise matrix has negative entry T[{i}, {j}] = {T[i, j]}; entries must be >= 0")
  sums = T.sum(axis=1)
  bad = np.flatnonzero(np.abs(sums - 1.0) > _ROW_SUM_ATOL)
  if bad.size:
    i = bad[0]
    raise ValueError(
      f"noise matrix row {i} sums to {float(sums[i])!r}; every row must sum to 1 (within {_ROW_SUM_ATOL})"
    )


def _check_labels(name, labels, K, n=None):
  """Return ``labels`` as int32 [N]; raise ValueError if not 1-D integers in [0, K) (of length n if given)."""
  arr = np.asarray(labels)
  if arr.ndim != 1:
    raise ValueError(f"{name} must be a 1-D array of class ids; got shape {arr.shape}")
  if n is not None and arr.shape[0] != n:
    raise ValueError(f"{name} has shape {arr.shape}; expected ({n},) to match the clean labels")
  if arr.size and not np.issubdtype(arr.dtype, np.integer):
    raise ValueError(f"{name} must hold integer class ids; got dtype {arr.dtype}")
  if arr.size and (arr.min() < 0 or arr.max() >= K):
    raise ValueError(
      f"{name} has values in [{arr.min()}, {arr.max()}]; valid range is [0, {K - 1}] for num_classes={K}"
    )
  return arr.astype(np.int32)


# --- Noise ------------------------------------------------------------------------------------------------------


def _num_flips(rate, n):
  # The epsilon keeps floor() exact when rate*n is an integer up to rounding (0.29 * 100 = 28.999...).
  return int(math.floor(rate * n + 1e-9))


def apply_noise(clean, *, kind, rate, num_classes, seed, dataset=None, matrix=None, real_labels=None):
  """Apply the noise model to ``clean`` (int [N]) and return a :class:`NoisyLabels`.

  Deterministic given ``seed`` (``np.random.default_rng(seed)``). Validates the configuration first.
  """
  validate(kind, rate, num_classes=num_classes, dataset=dataset, matrix=matrix)
  K = int(num_classes)
  clean = _check_labels("clean labels", clean, K)
  rng = np.random.default_rng(seed)
  labels = clean.copy()

  def pick(c):
    """Exactly floor(rate * N_c) indices of clean class c, uniform without replacement."""
    idx = np.flatnonzero(clean == c)
    return rng.choice(idx, size=_num_flips(rate, idx.size), replace=False)

  # Classes are visited in ascending order, so the labels depend only on the seed.
  if kind == "symmetric":
    for c in range(K):
      chosen = pick(c)
      # An offset in 1..K-1 gives a uniformly chosen class other than c.
      labels[chosen] = (c + rng.integers(1, K, size=chosen.size)) % K
  elif kind == "uniform":
    redraw = rng.random(clean.size) < rate
    labels[redraw] = rng.integers(0, K, size=int(redraw.sum()))
  elif kind == "asymmetric":
    for c, target in sorted(asymmetric_map(dataset).items()):
      labels[pick(c)] = target  # selected by clean label: swaps and chains flip a sample at most once
  elif kind == "pairflip":
    for c in range(K):
      labels[pick(c)] = (c + 1) % K
  elif kind == "matrix":
    T = np.asarray(matrix, dtype=np.float64)
    for c in range(K):
      idx = np.flatnonzero(clean == c)
      row = T[c] / T[c].sum()  # remove the (validated, tiny) rounding so rng.choice accepts the row
      labels[idx] = rng.choice(K, size=idx.size, p=row)
  elif kind == "real":
    if real_labels is None:
      raise ValueError("kind='real' needs real_labels= (the dataset's noisy labels, int [N])")
    labels = _check_labels("real_labels", real_labels, K, n=clean.size)

  is_noisy = labels != clean
  return NoisyLabels(
    labels=labels.astype(np.int32),
    clean=clean,
    is_noisy=is_noisy,
    rate_realised=float(is_noisy.mean()) if clean.size else 0.0,
    transition_realised=_empirical_transition(clean, labels, K),
  )


def _empirical_transition(clean, labels, K):
  """Empirical P(noisy = j | clean = i); rows of classes absent from ``clean`` are identity rows."""
  counts = np.zeros((K, K), dtype=np.float64)
  np.add.at(counts, (clean, labels), 1.0)
  totals = counts.sum(axis=1, keepdims=True)
  T = np.eye(K)
  present = totals[:, 0] > 0
  T[present] = counts[present] / totals[present]
  return T


def transition_matrix(kind, rate, *, num_classes, dataset=None, matrix=None):
  """Expected row-stochastic T[i, j] = P(noisy = j | clean = i) of the noise model (Patrini's known-T setting).

  For the exact-count kinds the realised fraction is floor(rate*N_c)/N_c, i.e. ``rate`` up to rounding.
  ``real`` noise has no known T: estimate it (e.g. Patrini's anchor-point estimator) and use kind='matrix'.
  """
  validate(kind, rate, num_classes=num_classes, dataset=dataset, matrix=matrix)
  K = int(num_classes)
  T = np.eye(K)
  if kind == "symmetric" and K > 1:
    T = np.full((K, K), rate / (K - 1))
    np.fill_diagonal(T, 1.0 - rate)
  elif kind == "uniform":
    T = (1.0 - rate) * np.eye(K) + rate / K
  elif kind in ("asymmetric", "pairflip"):
    mapping = asymmetric_map(dataset) if kind == "asymmetric" else {c: (c + 1) % K for c in range(K)}
    for c, target in mapping.items():
      T[c, c] = 1.0 - rate
      T[c, target] = rate
  elif kind == "matrix":
    T = np.array(matrix, dtype=np.float64)
  elif kind == "real":
    raise ValueError(
      "kind='real' has no known transition matrix; estimate it from the data (e.g. Patrini's anchor "
      "points) and pass it with kind='matrix' to transition_matrix"
    )
  return T


def summary(noisy):
  """JSON-serialisable description of the applied noise, for logging (None where a class is absent)."""
  K = noisy.transition_realised.shape[0]
  counts = np.bincount(noisy.clean, minlength=K)
  flips = np.bincount(noisy.clean[noisy.is_noisy], minlength=K)
  return {
    "rate_realised": float(noisy.rate_realised),
    "num_noisy": int(noisy.is_noisy.sum()),
    "num_samples": int(noisy.clean.size),
    "class_counts": [int(n) for n in counts],
    "per_class_flip_rate": [float(f / n) if n else None for f, n in zip(flips, counts)],
    "transition_realised": noisy.transition_realised.tolist(),
  }
