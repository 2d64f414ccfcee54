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
- ``file``: the labels stored in a file (``path``): a run's own ``noisy_labels.npz`` (``save_noisy_labels``), or
  labels made elsewhere as a ``.npy`` / ``.npz`` of int [N] or [R, N]; ``rate`` is ignored. Format and
  conversions: docs/NOISE_FILES.md.

Every run should log ``summary(noisy)``: the realised rate differs from the nominal one (floor, ``uniform``
self-draws, asymmetric maps touching only some classes).
"""

import contextlib
import dataclasses
import hashlib
import math
import numbers
import os

import numpy as np

KINDS = ("none", "symmetric", "uniform", "asymmetric", "pairflip", "matrix", "real", "file")

# Kinds whose noise level is set by `rate`; the others ignore it entirely.
RATE_KINDS = ("symmetric", "uniform", "asymmetric", "pairflip")

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


def validate(kind, rate, *, num_classes, dataset=None, matrix=None, path=None, rate_explicit=False):
  """Check a noise configuration; raise ValueError naming the bad value and what is allowed.

  Cheap and host-only, so the trainer calls it before compiling anything. ``rate`` is checked only for kinds
  that use it (``RATE_KINDS``: ``symmetric``, ``uniform``, ``asymmetric``, ``pairflip``). The other kinds ignore
  it, unless ``rate_explicit=True`` (the config set the rate on purpose, not by its default): then a rate other
  than None or 0 for such a kind is an error, as it would silently do nothing.

  ``kind='file'`` reads the file at ``path`` and checks its format, dtype, shape and class range against
  ``num_classes`` (``check_noise_file``); its length N and row count are checked where they are known
  (``check_noise_file(path, num_examples=N, num_replicas=R)``, and ``apply_noise``).
  """
  if kind not in KINDS:
    raise ValueError(f"unknown noise kind={kind!r}; valid kinds: {', '.join(KINDS)}")
  if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 1:
    raise ValueError(f"num_classes={_show(num_classes)} must be an integer >= 1")
  K = int(num_classes)

  if kind in RATE_KINDS:
    if (
      isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not math.isfinite(rate) or not 0.0 <= rate <= 1.0
    ):
      raise ValueError(f"noise rate={_show(rate)} for kind={kind!r} must be a number in [0, 1]")
  elif rate_explicit and rate is not None and not (isinstance(rate, numbers.Real) and rate == 0):
    raise ValueError(
      f"noise rate={_show(rate)} has no effect for kind={kind!r}: a rate applies only to kinds "
      f"{', '.join(RATE_KINDS)}; leave it unset (or 0) for kind={kind!r}"
    )

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
  if kind == "file":
    check_noise_file(path, num_classes=K)


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


def apply_noise(
  clean,
  *,
  kind,
  rate,
  num_classes,
  seed,
  dataset=None,
  matrix=None,
  real_labels=None,
  path=None,
  replica=0,
  num_replicas=1,
):
  """Apply the noise model to ``clean`` (int [N]) and return a :class:`NoisyLabels`.

  Deterministic given ``seed`` (``np.random.default_rng(seed)``). Validates the configuration first.

  ``kind='file'`` returns exactly row ``replica`` of the labels in ``path`` (``seed`` is not used). The file holds
  one row, shared by every replica, or ``num_replicas`` rows (row r for replica r), each of length N; all of it
  is checked by ``check_noise_file``, including, for a ``noisy_labels.npz``, that it was written for ``clean``.
  The flipped mask, realised rate and transition matrix are computed against ``clean`` as for every kind.
  """
  validate(kind, rate, num_classes=num_classes, dataset=dataset, matrix=matrix, path=path)
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
  elif kind == "file":
    if isinstance(num_replicas, bool) or not isinstance(num_replicas, numbers.Integral) or num_replicas < 1:
      raise ValueError(f"num_replicas={_show(num_replicas)} must be an integer >= 1")
    if isinstance(replica, bool) or not isinstance(replica, numbers.Integral) or not 0 <= replica < num_replicas:
      raise ValueError(f"replica={_show(replica)} is out of range; valid range is [0, {num_replicas - 1}]")
    rows = check_noise_file(
      path, num_examples=clean.size, num_classes=K, num_replicas=num_replicas, clean_labels=clean
    ).labels
    labels = rows[0 if rows.shape[0] == 1 else replica].copy()

  is_noisy = labels != clean
  return NoisyLabels(
    labels=labels.astype(np.int32),
    clean=clean,
    is_noisy=is_noisy,
    rate_realised=float(is_noisy.mean()) if clean.size else 0.0,
    transition_realised=_empirical_transition(clean, labels, K),
  )


def subset(noisy, indices):
  """The :class:`NoisyLabels` of the examples ``indices`` (e.g. the training part of a validation split), with
  the realised rate and transition matrix recomputed on them."""
  indices = np.asarray(indices)
  labels, clean = noisy.labels[indices], noisy.clean[indices]
  is_noisy = noisy.is_noisy[indices]
  return NoisyLabels(
    labels=labels,
    clean=clean,
    is_noisy=is_noisy,
    rate_realised=float(is_noisy.mean()) if clean.size else 0.0,
    transition_realised=_empirical_transition(clean, labels, noisy.transition_realised.shape[0]),
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
  ``real`` and ``file`` noise have no known T: estimate it (e.g. Patrini's anchor-point estimator) and use
  kind='matrix'.
  """
  if kind in ("real", "file"):
    raise ValueError(
      f"kind={kind!r} has no known transition matrix; estimate it from the data (e.g. Patrini's anchor "
      "points) and pass it with kind='matrix' to transition_matrix"
    )
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


# --- Noise files ------------------------------------------------------------------------------------------------
# Format: docs/NOISE_FILES.md. Files are read with allow_pickle=False: reading one never runs code.

NOISE_FILE = "noisy_labels.npz"  # the name a run's labels get in its workdir
FORMAT_VERSION = 1
# Keys an .npz may hold its labels under, in order of preference (this project's files use the first).
LABEL_KEYS = ("noisy_labels", "labels")
# Optional in an .npz made elsewhere: the clean labels [N] the noisy ones were made for, in the same order. When
# present they must equal the training set's labels, which catches a file in another example order.
CLEAN_KEY = "clean_labels"
# Every key of a file written by save_noisy_labels; `format_version` marks such a file.
_OWN_KEYS = (
  "format_version",
  "noisy_labels",
  "is_noisy",
  "noise_kind",
  "noise_rate",
  "seed",
  "rate_realised",
  "num_classes",
  "num_examples",
  "clean_sha256",
)
_ACCEPTED = (
  f"accepted: a run's {NOISE_FILE}, a .npy of integer labels [N] or [R, N], or an .npz holding them under key "
  + " or ".join(repr(k) for k in LABEL_KEYS)
)


def clean_labels_sha256(clean):
  """Hex SHA-256 of the clean labels as little-endian int32 bytes, in example order."""
  return hashlib.sha256(np.ascontiguousarray(clean, dtype="<i4").tobytes()).hexdigest()


def save_noisy_labels(path, noisy, replicas):
  """Write every replica's training labels to the .npz ``path`` (a run's is ``os.path.join(workdir, NOISE_FILE)``).

  Args:
    path: the file to write. It is replaced atomically (written to a temporary file in the same directory,
      then ``os.replace``): a reader sees the previous file or the whole new one, never a part.
    noisy: one :class:`NoisyLabels` per replica, all made from the same clean labels.
    replicas: the matching ``(setting, seed)`` pairs; ``setting`` is a dict with ``kind`` and ``rate``.

  Returns:
    ``path``. Arrays written (R replicas, N examples, K classes): ``noisy_labels`` int32 [R, N], ``is_noisy``
    bool [R, N], ``noise_kind`` str [R], ``noise_rate`` float64 [R] (NaN for kinds outside ``RATE_KINDS``, which
    ignore it), ``seed`` int64 [R], ``rate_realised`` float64 [R], and the scalars ``num_classes`` int64 (K),
    ``num_examples`` int64 (N), ``clean_sha256`` str (``clean_labels_sha256`` of the clean labels) and
    ``format_version`` int64 (``FORMAT_VERSION``).
  """
  noisy, replicas = list(noisy), list(replicas)
  if not noisy or len(noisy) != len(replicas):
    raise ValueError(f"need one (setting, seed) per NoisyLabels and at least one; got {len(noisy)} and {len(replicas)}")
  clean = noisy[0].clean
  K = noisy[0].transition_realised.shape[0]
  for r, nl in enumerate(noisy):
    if not np.array_equal(nl.clean, clean) or nl.transition_realised.shape[0] != K:
      raise ValueError(f"replica {r}'s clean labels or num_classes differ from replica 0's; one file holds one dataset")
  kinds, rates, seeds = [], [], []
  for r, (setting, seed) in enumerate(replicas):
    if setting.get("kind") not in KINDS:
      raise ValueError(f"replica {r}: noise kind={setting.get('kind')!r} is unknown; valid kinds: {', '.join(KINDS)}")
    kinds.append(setting["kind"])
    rates.append(float(setting["rate"]) if setting["kind"] in RATE_KINDS else math.nan)
    seeds.append(int(seed))
  arrays = {
    "format_version": np.int64(FORMAT_VERSION),
    "noisy_labels": np.stack([nl.labels for nl in noisy]).astype(np.int32),
    "is_noisy": np.stack([nl.is_noisy for nl in noisy]).astype(bool),
    "noise_kind": np.asarray(kinds, dtype=str),
    "noise_rate": np.asarray(rates, dtype=np.float64),
    "seed": np.asarray(seeds, dtype=np.int64),
    "rate_realised": np.asarray([nl.rate_realised for nl in noisy], dtype=np.float64),
    "num_classes": np.int64(K),
    "num_examples": np.int64(clean.size),
    "clean_sha256": np.asarray(clean_labels_sha256(clean)),
  }
  path = os.fspath(path)
  # O_EXCL with a unique name: two writers never share a temporary file; 0o666 lets the umask decide the mode.
  tmp = os.path.join(os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)}.{os.getpid()}.tmp")
  fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
  try:
    with os.fdopen(fd, "wb") as f:
      np.savez_compressed(f, **arrays)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.unlink(tmp)
    raise
  return path


# eq=False: as NoisyLabels, it holds arrays.
@dataclasses.dataclass(frozen=True, eq=False)
class NoiseFile:
  """Labels read from a noise file by ``check_noise_file``, with what the file says about them."""

  path: str
  array: str  # the .npz key the labels were read from; "" for a .npy
  labels: np.ndarray  # int32 [R, N]; a file of one row [N] reads as R = 1
  metadata: dict  # a noisy_labels.npz's other arrays (numpy values, by key); {} for a file made elsewhere
  clean_labels: np.ndarray | None = None  # int32 [N] of an .npz made elsewhere with key CLEAN_KEY, else None


def _read(path, what):
  """what(), with any failure of numpy/zipfile on a damaged file reported as a ValueError naming the file."""
  try:
    return what()
  except Exception as e:  # noqa: BLE001 - truncated zips, bad headers, pickles: the file is unreadable
    raise ValueError(
      f"noise file {path!r} cannot be read as a .npy or .npz ({type(e).__name__}: {e}); {_ACCEPTED}"
    ) from None


def _load_noise_file(path):
  """(labels as stored, the array's name, metadata, clean labels or None) of ``path``; errors name the file."""
  if path is None or not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
    raise ValueError(f"kind='file' needs path= (noise.path: the file of noisy labels; {_ACCEPTED})")
  path = os.fspath(path)
  if not os.path.exists(path):
    raise ValueError(f"noise file {path!r} does not exist")
  if os.path.isdir(path):
    inside = os.path.join(path, NOISE_FILE)
    hint = f"; did you mean the run's labels {inside!r}?" if os.path.isfile(inside) else ""
    raise ValueError(f"noise file {path!r} is a directory, not a file{hint}")
  if not os.path.isfile(path):
    raise ValueError(f"noise file {path!r} is not a regular file")
  ext = os.path.splitext(path)[1].lower()
  if ext in (".pt", ".pth", ".pkl", ".pickle"):
    raise ValueError(
      f"noise file {path!r}: {ext} files are not read (unpickling can run code, and torch is not a dependency); "
      f"convert it to an .npz or .npy as shown in docs/NOISE_FILES.md; {_ACCEPTED}"
    )
  loaded = _read(path, lambda: np.load(path, allow_pickle=False))
  if isinstance(loaded, np.ndarray):
    return loaded, "", {}, None
  with loaded:
    keys = list(loaded.files)
    name = next((k for k in LABEL_KEYS if k in keys), None)
    if name is None:
      raise ValueError(f"noise file {path!r} has no array {' or '.join(map(repr, LABEL_KEYS))}; it holds {keys}")
    labels = _read(path, lambda: loaded[name])
    if "format_version" not in keys:
      return labels, name, {}, (_read(path, lambda: loaded[CLEAN_KEY]) if CLEAN_KEY in keys else None)
    missing = [k for k in _OWN_KEYS if k not in keys]
    if missing:
      raise ValueError(f"noise file {path!r} has format_version but lacks array(s) {missing} of the format")
    metadata = _read(path, lambda: {k: loaded[k] for k in _OWN_KEYS if k != "noisy_labels"})
  return labels, name, metadata, None


def check_noise_file(path, *, num_examples=None, num_classes=None, num_replicas=None, clean_labels=None):
  """Read and check a file of noisy labels without loading any dataset; return a :class:`NoiseFile`.

  Host-only NumPy, so the trainer calls it before compiling: with just the path in the static checks, then
  with N (``num_examples``: the size of the training set the labels apply to), K (``num_classes``) and R
  (``num_replicas``: the replicas of the run) once the data is known. Checks: the file exists, is a .npy or
  .npz (read with ``allow_pickle=False``) with the labels under a ``LABEL_KEYS`` key, integer dtype, shape
  [N] or [R, N] with 1 or ``num_replicas`` rows, values in [0, K-1]. For a ``noisy_labels.npz`` also that it
  was written for N examples and K classes and, given ``clean_labels`` (int [N]), for these clean labels in
  this order (the ``clean_sha256`` it stores); for an .npz made elsewhere with a ``CLEAN_KEY`` array, that it
  equals ``clean_labels``. Every error is a ValueError naming the file, the array and the
  valid range.
  """
  labels, name, meta, file_clean = _load_noise_file(path)
  path = os.fspath(path)
  if clean_labels is not None:
    clean_labels = np.asarray(clean_labels)
    if num_examples is None:
      num_examples = clean_labels.shape[0] if clean_labels.ndim == 1 else None
    if clean_labels.shape != (num_examples,):
      raise ValueError(f"clean_labels has shape {clean_labels.shape}; expected ({num_examples},), one per example")
  where = f"noise file {path!r}, array {name!r}" if name else f"noise file {path!r} (its .npy array)"
  if not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(
      f"{where} has dtype {labels.dtype}; class ids must be integers (dtype int8..int64 or uint8..uint64); "
      "if the values are whole numbers, save labels.astype(np.int64)"
    )
  if labels.ndim not in (1, 2) or labels.size == 0:
    raise ValueError(
      f"{where} has shape {labels.shape}; expected [N] (one row shared by every replica) or [R, N] "
      "(one row per replica), non-empty"
    )
  rows = labels.reshape(1, -1) if labels.ndim == 1 else labels
  if meta:
    if int(meta["format_version"]) != FORMAT_VERSION:
      raise ValueError(f"{where}: format_version={int(meta['format_version'])}; this code reads {FORMAT_VERSION}")
    if labels.ndim != 2 or int(meta["num_examples"]) != rows.shape[1] or meta["is_noisy"].shape != rows.shape:
      raise ValueError(
        f"{where} has shape {labels.shape}, but the file records num_examples={int(meta['num_examples'])} and "
        f"is_noisy of shape {meta['is_noisy'].shape}: the file is damaged"
      )
  if num_examples is not None:
    N = int(num_examples)
    if rows.shape[1] != N:
      transposed = labels.ndim == 2 and labels.shape[0] == N
      hint = f" (shape {labels.shape} looks transposed: rows are replicas, [R, N])" if transposed else ""
      raise ValueError(
        f"{where} holds labels for {rows.shape[1]} examples; expected N={N}, the size of the training set the "
        f"noise applies to{hint}"
      )
  if num_classes is not None and meta and int(meta["num_classes"]) != int(num_classes):
    raise ValueError(f"{where} was written for num_classes={int(meta['num_classes'])}; this dataset has {num_classes}")
  # Negative ids are never valid here, so they are caught even before K is known.
  bad = (rows < 0) | (rows >= int(num_classes)) if num_classes is not None else rows < 0
  if bad.any():
    r, i = np.argwhere(bad)[0]
    valid = f"[0, {int(num_classes) - 1}] for num_classes={int(num_classes)}" if num_classes is not None else "[0, K-1]"
    raise ValueError(
      f"{where} has values in [{rows.min()}, {rows.max()}]; valid range is {valid} "
      f"(first out of range: row {r}, index {i}, value {rows[r, i]})"
    )
  if file_clean is not None:
    if (
      not np.issubdtype(file_clean.dtype, np.integer)
      or file_clean.shape != (rows.shape[1],)
      or (file_clean.size and (file_clean.min() < 0 or (num_classes is not None and file_clean.max() >= num_classes)))
    ):
      raise ValueError(
        f"noise file {path!r}, array {CLEAN_KEY!r} has dtype {file_clean.dtype} and shape {file_clean.shape}; "
        f"expected integers of shape ({rows.shape[1]},), one clean label per example, in [0, K-1]"
      )
    if clean_labels is not None and not np.array_equal(file_clean, clean_labels):
      differ = np.flatnonzero(file_clean != clean_labels)
      raise ValueError(
        f"noise file {path!r}, array {CLEAN_KEY!r} differs from this training set's labels at {differ.size} of "
        f"{clean_labels.size} examples (first at index {differ[0]}: {file_clean[differ[0]]} in the file, "
        f"{clean_labels[differ[0]]} here): another dataset, split, hold-out or example order?"
      )
  if num_replicas is not None and rows.shape[0] not in (1, int(num_replicas)):
    raise ValueError(
      f"{where} has {rows.shape[0]} rows; this run trains {int(num_replicas)} replica(s): give 1 row (shared by "
      f"every replica) or {int(num_replicas)} (row r for replica r)"
    )
  if clean_labels is not None and meta:
    clean = clean_labels
    stored, here = str(meta["clean_sha256"]), clean_labels_sha256(clean)
    if stored != here:
      # The labels a noisy_labels.npz marks as not flipped are its dataset's clean labels: compare them here.
      kept = np.flatnonzero(~meta["is_noisy"][0])
      differ = kept[rows[0, kept] != clean[kept]]
      detail = f"{differ.size} of the {kept.size} labels row 0 marks as not flipped differ here" + (
        f" (first at index {differ[0]}: {rows[0, differ[0]]} in the file, {clean[differ[0]]} here)"
        if differ.size
        else ""
      )
      raise ValueError(
        f"{where} was written for other clean labels (clean_sha256 {stored[:12]}..., this training set's "
        f"{here[:12]}...): {detail}. Another dataset, split, hold-out or example order? To apply the labels "
        "anyway, save them as a plain .npy (docs/NOISE_FILES.md)"
      )
  clean_out = None if file_clean is None else file_clean.astype(np.int32)
  return NoiseFile(path=path, array=name, labels=rows.astype(np.int32), metadata=meta, clean_labels=clean_out)
