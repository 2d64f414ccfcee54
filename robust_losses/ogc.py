r"""Optimized gradient clipping (OGC; Ye et al., AAAI 2025), as its official code computes it.

OGC bounds the gradient of the base loss w.r.t. the labelled-class probability :math:`p_y` at
:math:`\tau = |L'(t)|`: below a probability threshold :math:`t` the loss is replaced by a line of slope
:math:`-\tau` in :math:`p_y`. The threshold is not a hyperparameter: every ``refit_every`` steps it is re-chosen
from the losses of the last ``queue_size`` examples, modelled as a clean and a noisy Gaussian component (a
two-component mixture on the CE losses), so that the noisy component's expected clipped gradient is at most
:math:`1 + \eta\,\epsilon` times the clean one's (:math:`\eta` the current learning rate).

Two pieces, as in optax:

* :func:`optimized_gradient_clipping` — the stateless per-example loss for a given threshold :math:`t`;
* :func:`ogc_threshold_init` / :func:`ogc_threshold_update` (or the pair :func:`ogc_threshold`) — the threshold
  schedule: a queue of recent CE losses of the global batch, a mixture refitted by EM inside ``jit``, and the
  bisection for :math:`t`. Its state :class:`OGCThresholdState` is a pytree of fixed shapes.

A training step, as the official trainer runs it (the current batch enters the queue before the threshold is
refitted and used)::

    def objective(params, ogc_state, lr):
      logits = model.apply(params, x)
      ce = rl.softmax_cross_entropy(logits, y)
      ogc_state = rl.ogc_threshold_update(ogc_state, ce, learning_rate=lr, axis_name="batch")
      losses = rl.optimized_gradient_clipping(logits, y, threshold=ogc_state.threshold)
      return losses.mean(), ogc_state

**Every official OGC run also clips the global gradient norm at 5** (``clip_grad_norm_(..., 5.0)`` in its
trainer, for every method): set the trainer's ``grad_clip_norm=5`` to reproduce the protocol; it is not part
of the loss.

Reference: ``Virusdoll/OGC`` at ``a6b342af647257f1c1de3dc52bac85c35c88c70f``, ``methods/losses_ogc.py`` and
``methods/tools.py``; tests compare with numbers from running that code (tests/fixtures/official/ogc_*.json).
"""

import functools
import math
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from robust_losses import _utils, protocol, windows

BASES = ("ce", "fl", "gce")
MIN_PROB = 1e-7  # the official clamp of the softmax, and the search interval for t
MAX_PROB = 1.0 - 1e-7
MIN_LOSS = -math.log(MAX_PROB)  # the range of the clamped CE losses in the queue
MAX_LOSS = -math.log(MIN_PROB)
GRID_SIZE = 1000  # points of the loss grid the expected gradients are summed over
# sklearn GaussianMixture(n_components=2, max_iter=10, reg_covar=1e-3), tol at its default 1e-3, as tools.py
EM_STEPS = 10
REG_COVAR = 1e-3
EM_TOL = 1e-3
_LOG_2PI = math.log(2.0 * math.pi)


def _loss_of_p(p, base, gamma, q, xp=jnp):
  if base == "ce":
    return -xp.log(p)
  if base == "fl":
    return -((1.0 - p) ** gamma) * xp.log(p)
  return (1.0 - p**q) / q


def _grad_of_p(p, base, gamma, q, xp=jnp):
  """dL/dp (negative): the official `mapping_p_to_grad` (the focal modulator is differentiated)."""
  if base == "ce":
    return -1.0 / p
  if base == "fl":
    return gamma * xp.log(p) * (1.0 - p) ** (gamma - 1.0) - (1.0 - p) ** gamma / p
  return -(p ** (q - 1.0))


def gradient_bound(threshold, *, base: str = "ce", gamma: float = 0.5, q: float = 0.7) -> jax.Array:
  r""":math:`\tau = |L'(t)|`, the bound OGC puts on :math:`|\partial L / \partial p_y|` for threshold
  :math:`t` (float32, as the official code computes it from a float32 tensor)."""
  return jnp.abs(_grad_of_p(jnp.asarray(threshold, jnp.float32), base, gamma, q))


def _clamp_prob(p):
  # As torch.clamp: gradient 1 inside [MIN_PROB, MAX_PROB], ends included, and 0 outside.
  return jnp.where(p < MIN_PROB, MIN_PROB, jnp.where(p > MAX_PROB, MAX_PROB, p))


def _check_base(base, gamma, q):
  _utils.check_choice("base", base, BASES)
  _utils.check_range("gamma", gamma, 0.0)
  _utils.check_range("q", q, 0.0, 1.0, lo_open=True)


def optimized_gradient_clipping(
  logits: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  *,
  threshold: float = MIN_PROB,
  base: str = "ce",
  gamma: float = 0.5,
  q: float = 0.7,
  official_value: bool = True,
  queue_size: int = 4096,
  refit_every: int = 32,
  epsilon: float = 20.0,
  where: Optional[jax.typing.ArrayLike] = None,
  axis_name=None,
  step_state: Optional["OGCThresholdState"] = None,
  learning_rate: Optional[jax.typing.ArrayLike] = None,
  return_aux: bool = False,
):
  r"""The OGC loss for a given probability threshold :math:`t` (Ye et al., AAAI 2025).

  With :math:`p_y = \mathrm{clamp}(\mathrm{softmax}(z), 10^{-7}, 1 - 10^{-7})_y`, base loss :math:`L(p)` and
  :math:`\tau = |L'(t)|`:

  .. math:: \ell(p_y) = \begin{cases} 1 - \tau p_y + L(t) & p_y \le t \\ L(p_y) & p_y > t \end{cases}

  Bases: ``'ce'`` :math:`L = -\log p`; ``'fl'`` (focal) :math:`L = -(1-p)^\gamma \log p` with the modulator
  differentiated, :math:`L' = \gamma \log(p) (1-p)^{\gamma-1} - (1-p)^\gamma / p`; ``'gce'``
  :math:`L = (1 - p^q)/q`, :math:`L' = -p^{q-1}`. :math:`|L'|` decreases in :math:`p`, so the gradient w.r.t.
  :math:`p_y` is :math:`\max(|L'(p_y)|, \ldots)` clipped at :math:`\tau`: w.r.t. the logits it is
  :math:`g\, p_y (e_y - p)` with :math:`g = -\tau` below the threshold and :math:`L'(p_y)` above it (zero where
  the clamp is active, as in the official code).

  **Value convention.** The official code adds the constant 1 below the threshold. For CE, :math:`\tau t = 1`
  and the loss is continuous at :math:`t`; for focal and GCE it jumps there by :math:`1 - \tau t` (gradients are
  unaffected). ``official_value=True`` (default) reproduces the official values; ``False`` uses the continuous
  :math:`L(t) + \tau (t - p_y)`, which differs only by that constant.

  The threshold is normally OGC's schedule, :func:`ogc_threshold_update` (pass ``state.threshold``; it may be
  traced), or, equivalently, the schedule's state passed as ``step_state`` (what a training loop does through
  the registry's step-state protocol, `robust_losses.protocol.StepState`): the batch's CE losses then enter the
  state's queue first (global batch over ``axis_name``), the threshold is refitted on schedule for
  ``learning_rate``, and the loss uses the new ``step_state.threshold`` (``threshold`` is then unused); the
  new state is ``aux["step_state"]``. A fixed threshold turns this into per-example gradient clipping at the
  loss level (PHuber-CE is the same construction, continuous, for CE). The default :math:`t = 10^{-7}`, OGC's
  initial state, clips nothing: the loss is then the clamped base loss. Soft labels use the label-weighted
  sum of the per-class terms.

  Args:
    logits: [..., K] unnormalised scores.
    labels: [...] integer class ids (negative: ignored example) or [..., K] one-hot/soft labels.
    threshold: probability threshold :math:`t` in :math:`[10^{-7}, 1 - 10^{-7}]` (no gradient flows into it).
    base: ``'ce'``, ``'fl'`` or ``'gce'`` (official ``ogc_ce``, ``ogc_fl``, ``ogc_gce``).
    gamma: focal parameter for ``'fl'``, >= 0 (official scripts: 0.5).
    q: GCE parameter for ``'gce'``, in (0, 1] (official scripts: 0.7).
    official_value: the official constant 1 below the threshold (True) or the continuous value (False).
    queue_size: the schedule's queue of recent losses (official ``queue_size_q``: 4096), for the state a
      training loop keeps (:func:`ogc_threshold_init`); 0 keeps no state: the fixed ``threshold`` is used.
    refit_every: the official ``time_frame_s`` (32), with ``step_state``.
    epsilon: the official ``epsilon`` (20), with ``step_state``.
    where: optional bool [...]; False examples get loss 0 and zero gradient (and do not enter the queue).
    axis_name: the data-parallel axis, with ``step_state`` (the queue holds the global batch).
    step_state: an :class:`OGCThresholdState` to update from this batch and use, or None (fixed ``threshold``).
    learning_rate: the optimizer's learning rate at this step, required with ``step_state``.
    return_aux: also return ``{"clipped": 1 where p_y <= t, "unclipped": the CE losses, "step_state": the new
      state}`` (``step_state`` only when given).

  Returns:
    Per-example losses [...] (float32), and the aux dict if ``return_aux``.

  References:
    Ye et al., `Optimized Gradient Clipping for Noisy Label Learning <https://arxiv.org/abs/2412.08941>`_,
    AAAI 2025; official code ``Virusdoll/OGC`` (``methods/losses_ogc.py``).

  Examples:
    >>> import jax.numpy as jnp
    >>> import robust_losses as rl
    >>> jnp.set_printoptions(precision=4)
    >>> logits = jnp.array([[3.0, 0.5, -1.0, 0.4], [-0.1, 1.5, 0.1, -0.4], [2.7, -0.2, -0.1, 1.0]])
    >>> labels = jnp.array([0, 1, 3])  # class ids; the last contradicts the model (p_y = 0.14)
    >>> print(rl.optimized_gradient_clipping(logits, labels))  # t = 1e-7: plain CE
    [0.161  0.4688 1.9612]
    >>> print(rl.optimized_gradient_clipping(logits, labels, threshold=0.5))  # gradient bound 1/t = 2
    [0.161  0.4688 1.4118]
  """
  _check_base(base, gamma, q)
  _utils.check_range("threshold", threshold, MIN_PROB, MAX_PROB)
  _check_queue_size(queue_size)
  _check_schedule(refit_every, epsilon, 10, 1e-7)
  where = _utils.keep_labelled(logits, labels, where)
  logits, labels, where = _utils.prepare(logits, labels, where)
  ce = None
  if step_state is not None or return_aux:
    ce = jax.lax.stop_gradient(_utils.cross_entropy(logits, labels))
  if step_state is not None:
    if learning_rate is None:
      raise ValueError(
        "optimized_gradient_clipping with step_state needs learning_rate= (the optimizer's learning rate at this "
        "step: the threshold's target is 1 + learning_rate * epsilon)"
      )
    step_state = ogc_threshold_update(
      step_state,
      ce,
      learning_rate=learning_rate,
      base=base,
      gamma=gamma,
      q=q,
      refit_every=refit_every,
      epsilon=epsilon,
      where=where,
      axis_name=axis_name,
    )
    threshold = step_state.threshold
  t = jax.lax.stop_gradient(jnp.asarray(threshold, jnp.float32))
  tau = jnp.abs(_grad_of_p(t, base, gamma, q))
  below = (1.0 if official_value else tau * t) + _loss_of_p(t, base, gamma, q)

  def terms(log_p):
    p = _clamp_prob(jnp.exp(log_p))
    return jnp.where(p <= t, below - tau * p, _loss_of_p(p, base, gamma, q))

  losses = _utils.mask(_utils.label_sum(logits, labels, terms), where)
  if not return_aux:
    return losses
  # p_y <= t, read from the CE of the clamped softmax (-log p_y >= -log t).
  clipped = _utils.mask((jnp.clip(ce, MIN_LOSS, MAX_LOSS) >= -jnp.log(t)).astype(jnp.float32), where)
  aux = {"clipped": clipped, "unclipped": _utils.mask(ce, where)}
  if step_state is not None:
    aux["step_state"] = step_state
  return losses, aux


def _check_queue_size(queue_size):
  _utils.check_int("queue_size", queue_size, 0)
  if queue_size == 1:
    raise ValueError("queue_size=1 is out of range; valid values are 0 (no schedule: a fixed threshold) or >= 2")


# --- the threshold schedule ----------------------------------------------------------------------------------


class OGCThresholdState(NamedTuple):
  """OGC's threshold state (a pytree of fixed shapes; replicated under data parallelism).

  Attributes:
    queue: :class:`LossWindow` of the last ``queue_size`` clamped CE losses of the global batch (``[Q]``).
    step: int32 ``[]``, updates so far; a refit happens when it is a multiple of ``refit_every``.
    means: float32 ``[2]``, (clean, noisy) means of the last mixture fit (0 before the first).
    variances: float32 ``[2]``, their variances (``reg_covar`` included, as sklearn reports them).
    weights: float32 ``[2]``, their mixture weights (the official search does not use them).
    threshold: float32 ``[]``, the probability threshold :math:`t` (``1e-7``, i.e. no clipping, until the
      first refit).
  """

  queue: windows.LossWindow
  step: jax.Array
  means: jax.Array
  variances: jax.Array
  weights: jax.Array
  threshold: jax.Array


def ogc_threshold_init(queue_size: int = 4096) -> OGCThresholdState:
  """The initial OGC state: an empty queue of ``queue_size`` losses and :math:`t = 10^{-7}` (no clipping).

  References:
    Ye et al., `Optimized Gradient Clipping for Noisy Label Learning <https://arxiv.org/abs/2412.08941>`_,
    AAAI 2025; official code ``Virusdoll/OGC`` (``methods/losses_ogc.py``).

  Examples:
    >>> import robust_losses as rl
    >>> state = rl.ogc_threshold_init(queue_size=256)
    >>> print(state.queue.losses.shape, f"{state.threshold:.1e}")
    (256,) 1.0e-07
  """
  zeros = jnp.zeros((2,), jnp.float32)
  return OGCThresholdState(
    queue=windows.loss_window_init(queue_size),
    step=jnp.zeros((), jnp.int32),
    means=zeros,
    variances=zeros,
    weights=zeros,
    threshold=jnp.asarray(MIN_PROB, jnp.float32),
  )


def _check_schedule(refit_every, epsilon, search_steps, search_tol):
  _utils.check_int("refit_every", refit_every, 1)
  _utils.check_range("epsilon", epsilon, 0.0)
  _utils.check_int("search_steps", search_steps, 0)
  _utils.check_range("search_tol", search_tol, 0.0)


def _log_joint(x, means, variances, weights):
  """[N, 2] log(w_k N(x; mu_k, var_k)), as sklearn's full-covariance E-step computes it in one dimension."""
  return -0.5 * (_LOG_2PI + jnp.square(x[:, None] - means) / variances) - 0.5 * jnp.log(variances) + jnp.log(weights)


def _gaussian_parameters(x, resp, reg_covar):
  """sklearn's `_estimate_gaussian_parameters` in one dimension: (nk, means, variances) from [N, 2] resp."""
  nk = jnp.sum(resp, axis=0) + 10 * jnp.finfo(resp.dtype).eps
  means = jnp.sum(resp * x[:, None], axis=0) / nk
  variances = jnp.sum(resp * jnp.square(x[:, None] - means), axis=0) / nk + reg_covar
  return nk, means, variances


def _two_means(x, valid):
  """The two clusters of the exact 1-D 2-means (minimum within-cluster sum of squares), as [N, 2] one-hot.

  In one dimension the optimal split is a cut of the sorted values, found by one pass of prefix sums over
  all cuts (centred values: float32 sums of squares of 16-nat losses would cancel).
  """
  n = jnp.sum(valid.astype(jnp.int32))
  ordered = jnp.sort(jnp.where(valid, x, jnp.inf))
  center = jnp.sum(jnp.where(valid, x, 0.0)) / jnp.maximum(n, 1)
  centred = jnp.where(jnp.isfinite(ordered), ordered - center, 0.0)
  left = jnp.cumsum(centred)[:-1]  # sum of the `cut` smallest, cut = 1 .. N-1
  right = jnp.sum(centred) - left
  cut = jnp.arange(1, x.shape[0], dtype=jnp.int32)
  # Within-cluster SS = total SS - (left^2 / cut + right^2 / (n - cut)): maximise the bracket.
  between = jnp.square(left) / cut + jnp.square(right) / jnp.maximum(n - cut, 1)
  best = jnp.argmax(jnp.where(cut < n, between, -jnp.inf))
  low = valid & (x <= ordered[best])
  return jnp.stack([low, valid & ~low], axis=-1).astype(x.dtype)


def fit_two_gaussians(
  losses: jax.typing.ArrayLike,
  valid: Optional[jax.typing.ArrayLike] = None,
  *,
  em_steps: int = EM_STEPS,
  reg_covar: float = REG_COVAR,
  tol: float = EM_TOL,
) -> tuple[jax.Array, jax.Array, jax.Array]:
  r"""A two-component 1-D Gaussian mixture by EM, as the official ``fit_gmm`` asks of sklearn.

  sklearn's ``GaussianMixture(n_components=2, max_iter=10, reg_covar=1e-3)`` step by step — initial
  parameters from hard cluster assignments, then up to ``em_steps`` E/M steps, stopping after the first M-step
  whose mean log-likelihood (computed in its E-step) changed by less than ``tol``; variances include
  ``reg_covar`` — with two departures: the initial clusters are the **exact** 1-D 2-means split (deterministic)
  instead of sklearn's k-means++-seeded Lloyd iterations (random), and the arithmetic is float32. The
  official code then calls the component with the smaller mean clean and the other noisy.

  Args:
    losses: [N] values (OGC: clamped CE losses).
    valid: optional bool [N]; False entries are left out (at least 2 valid entries are needed).
    em_steps, reg_covar, tol: sklearn's ``max_iter``, ``reg_covar`` and ``tol``.

  Returns:
    ``(means, variances, weights)``, each float32 [2], ordered (clean, noisy).
  """
  x = jnp.reshape(jnp.asarray(losses, jnp.float32), (-1,))
  valid = jnp.ones(x.shape, bool) if valid is None else jnp.reshape(jnp.asarray(valid, bool), (-1,))
  x = jnp.where(valid, x, 0.0)
  w = valid.astype(x.dtype)[:, None]
  n = jnp.maximum(jnp.sum(w), 1.0)
  nk, means, variances = _gaussian_parameters(x, _two_means(x, valid), reg_covar)
  weights = nk / n
  bound, done = -jnp.inf, jnp.asarray(False)
  # A Python loop (static steps): a fori_loop carry would have to match the varying type of x inside shard_map.
  for _ in range(em_steps):
    joint = _log_joint(x, means, variances, weights)
    norm = jax.nn.logsumexp(joint, axis=1, keepdims=True)
    new_bound = jnp.sum(w * norm) / n
    nk, new_means, new_variances = _gaussian_parameters(x, w * jnp.exp(joint - norm), reg_covar)
    means, variances = jnp.where(done, means, new_means), jnp.where(done, variances, new_variances)
    weights = jnp.where(done, weights, nk / jnp.sum(nk))
    converged = jnp.abs(new_bound - bound) < tol
    bound = jnp.where(done, bound, new_bound)
    done = done | converged
  clean, noisy = jnp.argmin(means), jnp.argmax(means)
  order = jnp.stack([clean, noisy])
  return means[order], variances[order], weights[order]


@functools.lru_cache(maxsize=None)
def _grid_gradients(base, gamma, q) -> np.ndarray:
  """|L'(p)| on the official grid H = linspace(-log(1 - 1e-7), -log(1e-7), 1000), p = exp(-H), in float64."""
  grid = np.linspace(MIN_LOSS, MAX_LOSS, GRID_SIZE)
  return np.abs(_grad_of_p(np.exp(-grid), base, gamma, q, xp=np))


def clipped_gradient_ratio(threshold, means, variances, *, base: str = "ce", gamma: float = 0.5, q: float = 0.7):
  r"""The official ``calc_grad_ratio``: noisy over clean expected clipped gradient for threshold :math:`t`.

  .. math:: r(t) = \frac{\sum_k f_n(H_k) \min(G_k, \tau) / \sum_k f_n(H_k)}
                        {\sum_k f_c(H_k) \min(G_k, \tau) / \sum_k f_c(H_k)},\quad \tau = |L'(t)|,

  over the grid :math:`H_k` of 1000 CE values in :math:`[-\log(1-10^{-7}), -\log 10^{-7}]`,
  :math:`G_k = |L'(e^{-H_k})|`, and :math:`f_c, f_n` the clean and noisy components' normal densities
  truncated to the grid's range. Truncation constants and :math:`1/\sigma` cancel in the ratio, so the
  unnormalised densities (scaled by their largest value on the grid) give the same number. Decreasing in
  :math:`t`. ``gamma`` and ``q`` must be Python numbers.
  """
  grid = jnp.asarray(np.linspace(MIN_LOSS, MAX_LOSS, GRID_SIZE), jnp.float32)
  g = jnp.asarray(_grid_gradients(base, float(gamma), float(q)), jnp.float32)
  log_f = -0.5 * jnp.square(grid[:, None] - means) / variances  # [grid, (clean, noisy)]
  f = jnp.exp(log_f - jnp.max(log_f, axis=0))
  tau = gradient_bound(threshold, base=base, gamma=gamma, q=q)
  clipped = jnp.minimum(g[:, None], jnp.asarray(tau)[..., None, None])
  expected = jnp.sum(f * clipped, axis=-2) / jnp.sum(f, axis=0)
  return expected[..., 1] / expected[..., 0]


def search_threshold(
  means: jax.typing.ArrayLike,
  variances: jax.typing.ArrayLike,
  *,
  learning_rate,
  base: str = "ce",
  gamma: float = 0.5,
  q: float = 0.7,
  epsilon: float = 20.0,
  search_steps: int = 10,
  search_tol: float = 1e-7,
) -> jax.Array:
  r"""The official ``binary_search`` for :math:`t` with :math:`r(t) = 1 + \eta\,\epsilon` (float32).

  :math:`r` is :func:`clipped_gradient_ratio` for the (clean, noisy) components. Exactly the official steps: if
  :math:`r(1 - 10^{-7})` is above the target, :math:`1 - 10^{-7}` (clip as hard as possible); else if
  :math:`r(10^{-7})` is below it, :math:`10^{-7}` (no clipping); else ``search_steps`` bisection steps on
  :math:`[10^{-7}, 1 - 10^{-7}]`, returning a midpoint whose :math:`|r - \text{target}|` is below
  ``search_tol``, or else the final upper end (the side with :math:`r \le` target). 10 steps resolve
  :math:`t` to about :math:`10^{-3}`.

  Args:
    means, variances: float [2], (clean, noisy), e.g. from :func:`fit_two_gaussians`.
    learning_rate: :math:`\eta`, the optimizer's current learning rate (may be traced).
    base, gamma, q: as in :func:`optimized_gradient_clipping`.
    epsilon: :math:`\epsilon` (official scripts: 20).
    search_steps, search_tol: the official ``binary_search_max_iter`` (10) and ``binary_search_tol`` (1e-7).

  Returns:
    float32 scalar :math:`t`.
  """
  means, variances = jnp.asarray(means, jnp.float32), jnp.asarray(variances, jnp.float32)
  target = 1.0 + jnp.asarray(learning_rate, jnp.float32) * epsilon

  def excess(t):  # official cost(x) = target - r(x): positive where t clips too much
    return target - clipped_gradient_ratio(t, means, variances, base=base, gamma=gamma, q=q)

  lo, hi = jnp.float32(MIN_PROB), jnp.float32(MAX_PROB)
  if_hi, if_lo = excess(hi) < 0, excess(lo) > 0
  done, result = if_hi | if_lo, jnp.where(if_hi, hi, lo)
  for _ in range(search_steps):
    mid = (lo + hi) / 2
    c = excess(mid)
    found = ~done & (jnp.abs(c) < search_tol)
    result = jnp.where(found, mid, result)
    done = done | found
    hi = jnp.where(~done & (c > 0), mid, hi)
    lo = jnp.where(~done & ~(c > 0), mid, lo)  # as the official `else`: a NaN cost moves the lower end
  return jnp.where(done, result, hi)


def ogc_threshold_update(
  state: OGCThresholdState,
  losses: jax.typing.ArrayLike,
  *,
  learning_rate,
  base: str = "ce",
  gamma: float = 0.5,
  q: float = 0.7,
  refit_every: int = 32,
  epsilon: float = 20.0,
  search_steps: int = 10,
  search_tol: float = 1e-7,
  where: Optional[jax.typing.ArrayLike] = None,
  axis_name=None,
) -> OGCThresholdState:
  r"""One step of OGC's threshold schedule (the official ``forward`` before the loss is computed).

  1. The batch's CE losses :math:`H_i = -\log p_y` (clamped to the official range, i.e. the CE of the clamped
     softmax) enter the queue — those of the **global** batch, gathered over ``axis_name``, so the state is the
     same on every device and equals a single device's.
  2. The step counter advances; when it is a multiple of ``refit_every`` and the queue is full, a two-component
     Gaussian mixture is fitted to the queue (:func:`fit_two_gaussians`, EM in ``jit``) and :math:`t` is
     re-chosen (:func:`search_threshold`) for the target :math:`1 + \eta\,\epsilon`.
  3. The loss of this step uses the returned ``state.threshold``.

  With batch 128 and the official queue of 4096 and refit every 32 steps, the first 31 steps clip nothing.
  Inside ``vmap`` (independent replicas) the refit's ``lax.cond`` becomes a select, so the fit is computed at
  every step and kept only on refit steps.

  Args:
    state: from :func:`ogc_threshold_init` or a previous update.
    losses: per-example softmax CE losses [...] (e.g. :func:`softmax_cross_entropy`; taken behind
      ``stop_gradient``). The CE is used whatever the base, as in the official code.
    learning_rate: the optimizer's learning rate at this step (scalar, may be traced).
    base, gamma, q: as in :func:`optimized_gradient_clipping` (Python numbers).
    refit_every: the official ``time_frame_s`` (32).
    epsilon: the official ``epsilon`` (20).
    search_steps, search_tol: the official ``binary_search_max_iter`` (10) and ``binary_search_tol`` (1e-7).
    where: optional bool [...]; False entries (padding, ignored examples) do not enter the queue.
    axis_name: the data-parallel axis inside ``shard_map``/``pmap``, or None.

  Returns:
    The new :class:`OGCThresholdState`.

  References:
    Ye et al., `Optimized Gradient Clipping for Noisy Label Learning <https://arxiv.org/abs/2412.08941>`_,
    AAAI 2025; official code ``Virusdoll/OGC`` (``methods/losses_ogc.py``).

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> import robust_losses as rl
    >>> jnp.set_printoptions(precision=4)
    >>> losses = jnp.concatenate([jnp.full(48, 0.1), jnp.full(16, 3.0)])  # a clean and a noisy mode
    >>> losses = losses + 0.05 * jax.random.normal(jax.random.key(0), (64,))
    >>> state = rl.ogc_threshold_init(queue_size=64)
    >>> state = rl.ogc_threshold_update(state, losses, learning_rate=0.1, refit_every=1)
    >>> print(state.means, f"{state.threshold:.4f}")
    [0.102  3.0001] 0.2998
  """
  _check_base(base, gamma, q)
  _check_schedule(refit_every, epsilon, search_steps, search_tol)
  values = jnp.clip(jax.lax.stop_gradient(_utils.as_float(losses)), MIN_LOSS, MAX_LOSS)
  queue = windows.loss_window_update(state.queue, values, where=where, axis_name=axis_name)
  step = state.step + 1
  refit = (step % refit_every == 0) & (queue.count == queue.size)

  def fit():
    means, variances, weights = fit_two_gaussians(queue.losses, queue.valid())
    threshold = search_threshold(
      means,
      variances,
      learning_rate=learning_rate,
      base=base,
      gamma=gamma,
      q=q,
      epsilon=epsilon,
      search_steps=search_steps,
      search_tol=search_tol,
    )
    return means, variances, weights, threshold

  def keep():
    return state.means, state.variances, state.weights, state.threshold

  means, variances, weights, threshold = jax.lax.cond(refit, fit, keep)
  return OGCThresholdState(queue, step, means, variances, weights, threshold)


class OGCThreshold(NamedTuple):
  """OGC's threshold schedule with its hyperparameters bound, like ``optax.GradientTransformation``.

  Attributes:
    init: ``() -> OGCThresholdState``.
    update: ``(state, losses, *, learning_rate, where=None, axis_name=None) -> OGCThresholdState``.
  """

  init: Callable[[], OGCThresholdState]
  update: Callable[..., OGCThresholdState]


def ogc_threshold(
  *,
  base: str = "ce",
  gamma: float = 0.5,
  q: float = 0.7,
  queue_size: int = 4096,
  refit_every: int = 32,
  epsilon: float = 20.0,
  search_steps: int = 10,
  search_tol: float = 1e-7,
) -> OGCThreshold:
  """:func:`ogc_threshold_init` and :func:`ogc_threshold_update` with these hyperparameters (the official
  scripts' values are the defaults), checked now.

  References:
    Ye et al., `Optimized Gradient Clipping for Noisy Label Learning <https://arxiv.org/abs/2412.08941>`_,
    AAAI 2025; official code ``Virusdoll/OGC`` (``methods/losses_ogc.py``).

  Examples:
    >>> import jax.numpy as jnp
    >>> import robust_losses as rl
    >>> schedule = rl.ogc_threshold(base="gce", queue_size=128)
    >>> state = schedule.init()
    >>> state = schedule.update(state, jnp.linspace(0.0, 4.0, 64), learning_rate=0.1)
    >>> print(int(state.queue.count), f"{state.threshold:.1e}")  # the queue is not full yet: no refit
    64 1.0e-07
  """
  _check_base(base, gamma, q)
  _check_schedule(refit_every, epsilon, search_steps, search_tol)
  _utils.check_int("queue_size", queue_size, 2)
  update = functools.partial(
    ogc_threshold_update,
    base=base,
    gamma=gamma,
    q=q,
    refit_every=refit_every,
    epsilon=epsilon,
    search_steps=search_steps,
    search_tol=search_tol,
  )
  return OGCThreshold(init=functools.partial(ogc_threshold_init, queue_size), update=update)


def _init_step_state(hparams, num_classes) -> Optional[OGCThresholdState]:
  del num_classes
  return ogc_threshold_init(hparams["queue_size"]) if hparams["queue_size"] else None


# The registry's step-state protocol: a training loop keeps OGCThresholdState and passes the learning rate.
TRAINING = {"optimized_gradient_clipping": protocol.Training(step_state=protocol.StepState(init=_init_step_state))}
