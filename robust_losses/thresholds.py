r"""Clipping thresholds that separate a batch's clean mode from its noisy mode (issue: dynamic clipping that
adapts to the noise rate).

A fixed quantile clips the same share of every batch whatever the noise. These statistics look at the shape of
the batch's loss distribution instead; each returns :math:`\tau` from the valid entries of a (gathered,
replicated) batch of per-example losses. They are our designs, tested on digits (docs/RESULTS.md), not the
statistic of Hurtik et al. (which we could not obtain).

* ``mad``: median + k · 1.4826 · MAD (a robust "mean + k·std").
* ``otsu``: Otsu's threshold on the log-losses: the cut of a 64-bin histogram that maximises the between-class
  variance :math:`\omega_0 \omega_1 (\mu_0 - \mu_1)^2`. Always splits the batch in two.
* ``gmm``: a two-component Gaussian mixture fitted to the log-losses by a few EM steps (the clean/noisy split
  DivideMix makes once per epoch, here per mini-batch). Examples whose posterior of the high-loss component
  exceeds 1/2 are clipped; if the two components are not separated by at least ``separation`` pooled standard
  deviations the batch is taken to be one mode and nothing is clipped, so a clean batch stays unclipped.
"""

import jax
import jax.numpy as jnp

EPS = 1e-12  # log of a zero loss
EM_STEPS = 20
BINS = 64


def _log_losses(values, valid):
  return jnp.where(valid, jnp.log(jnp.maximum(values, EPS)), 0.0)


def _mean_std(x, valid):
  n = jnp.maximum(jnp.sum(valid), 1)
  mean = jnp.sum(jnp.where(valid, x, 0.0)) / n
  return mean, jnp.sqrt(jnp.sum(jnp.where(valid, jnp.square(x - mean), 0.0)) / n)


def mad(values, valid, k, quantile_fn):
  """median + k * 1.4826 * median(|L - median|) (1.4826 makes MAD estimate the std of a normal)."""
  median = quantile_fn(values, valid, 0.5)
  spread = quantile_fn(jnp.abs(values - median), valid, 0.5)
  return median + k * 1.4826 * spread


def otsu(values, valid):
  x = _log_losses(values, valid)
  lo = jnp.min(jnp.where(valid, x, jnp.inf))
  hi = jnp.max(jnp.where(valid, x, -jnp.inf))
  width = jnp.maximum(hi - lo, 1e-6) / BINS
  bins = jnp.clip(jnp.floor((x - lo) / width).astype(jnp.int32), 0, BINS - 1)
  w = valid.astype(jnp.float32)
  counts = jnp.zeros(BINS).at[bins].add(w)
  sums = jnp.zeros(BINS).at[bins].add(w * x)
  c0, s0 = jnp.cumsum(counts)[:-1], jnp.cumsum(sums)[:-1]  # below cut i+1
  total, total_sum = jnp.sum(counts), jnp.sum(sums)
  c1, s1 = total - c0, total_sum - s0
  between = c0 * c1 * jnp.square(s0 / jnp.maximum(c0, 1) - s1 / jnp.maximum(c1, 1))
  cut = jnp.argmax(jnp.where((c0 > 0) & (c1 > 0), between, -1.0)) + 1
  return jnp.exp(lo + cut * width)


def _log_densities(x, coef):
  """Each component's log pi - log sigma - ((x - mu) / sigma)^2 / 2 (the log density up to a shared constant),
  for coef = [mu0, mu1, 1/sigma0, 1/sigma1, log pi0 - log sigma0, log pi1 - log sigma1]."""
  return (coef[4] - 0.5 * jnp.square((x - coef[0]) * coef[2]), coef[5] - 0.5 * jnp.square((x - coef[1]) * coef[3]))


def _two_component_responsibilities(x, coef):
  """Posterior of each component, (r0, r1), for coef = [mu0, mu1, 1/sigma0, 1/sigma1, c0, c1] with
  c = log pi - log sigma: the softmax of c - ((x - mu) / sigma)^2 / 2 over the two components, written with
  one exp per element (exp(-|difference|), shared by both) instead of the two of a softmax."""
  log_p0, log_p1 = _log_densities(x, coef)
  diff = log_p1 - log_p0
  t = jnp.exp(-jnp.abs(diff))
  smaller = t / (1.0 + t)
  larger = 1.0 - smaller
  first = diff <= 0
  return jnp.where(first, larger, smaller), jnp.where(first, smaller, larger)


def _coefficients(mu, sigma, pi):
  # One array (behind an optimization barrier) so XLA computes the per-step scalars once, in one kernel,
  # instead of recomputing them for every example inside the next step's elementwise kernel.
  return jax.lax.optimization_barrier(jnp.concatenate([mu, 1.0 / sigma, jnp.log(pi) - jnp.log(sigma)]))


def gmm(values, valid, separation):
  x = _log_losses(values, valid)
  w = valid.astype(x.dtype)
  mean, std = _mean_std(x, valid)
  std = jnp.maximum(std, 1e-3)
  floor = 1e-2 * std  # variance floor, relative to the batch's spread
  # Start the components at the quarter points of the range, so a small high-loss mode (few noisy labels)
  # gets its own component instead of the EM splitting the large clean mode.
  lo = jnp.min(jnp.where(valid, x, jnp.inf))
  hi = jnp.max(jnp.where(valid, x, -jnp.inf))
  spread = jnp.maximum(hi - lo, 1e-3)
  sigma = jnp.stack([std, std]) / 2
  pi = jnp.array([0.5, 0.5], x.dtype)
  coef = _coefficients(jnp.stack([lo + 0.25 * spread, lo + 0.75 * spread]), sigma, pi)
  # A step needs each component's weighted count and first two moments. They are sums of the posterior
  # times the rows of `powers` (weights times powers of the log-losses about the batch mean), which do not
  # change between steps: one matrix-vector product per step, and only the posterior is computed per
  # example. The smaller component's sums are taken directly and the larger's as totals minus them, which
  # costs the larger (at least half the mass) at most a few ulps. The thresholds equal those of the
  # two-pass EM with softmax posteriors (tests/test_losses_values.py, on random batches of several sizes,
  # with unimodal, tiny and far, tight noisy modes).
  xc = x - mean
  powers = jnp.stack([w, w * xc, w * xc * xc])
  totals = jnp.sum(powers, axis=1)
  for _ in range(EM_STEPS):  # static: a fori_loop carry would not match x's varying type in shard_map
    second = pi[1] < pi[0]
    log_p0, log_p1 = _log_densities(x, coef)
    posterior_of_smaller = 1.0 / (1.0 + jnp.exp(jnp.where(second, log_p0 - log_p1, log_p1 - log_p0)))
    small = jnp.dot(powers, posterior_of_smaller, precision=jax.lax.Precision.HIGHEST)
    large = totals - small
    moments = jnp.where(second, jnp.stack([large, small]), jnp.stack([small, large]))  # [component, power]
    n = jnp.maximum(moments[:, 0], 1e-6)
    offset = moments[:, 1] / n
    variance = jnp.maximum(moments[:, 2] / n - jnp.square(offset), 0.0)
    sigma, pi = jnp.sqrt(variance + floor**2), n / jnp.sum(n)
    coef = _coefficients(mean + offset, sigma, pi)
  mu = coef[:2]
  high = jnp.argmax(mu)
  noisy = (jnp.stack(_two_component_responsibilities(x, coef))[high] > 0.5) & (x > jnp.min(mu)) & valid
  separated = jnp.abs(mu[1] - mu[0]) >= separation * jnp.sqrt(0.5 * (sigma[0] ** 2 + sigma[1] ** 2))
  keep_all = jnp.max(jnp.where(valid, values, -jnp.inf))
  tau = jnp.min(jnp.where(noisy, values, jnp.inf))
  # A loss exactly at tau keeps its gradient in dynamic_clipping (L > tau clips), so step just below it.
  tau = jnp.nextafter(tau, -jnp.inf)
  return jnp.where(separated & jnp.any(noisy), tau, keep_all)
