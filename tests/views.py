"""Multi-view losses (GJS) in tests written for [B, K] logits: M distinct views made from one logits array."""

import jax.numpy as jnp


def views_of(logits, num_views: int):
  """[M, ..., K]: view i is the logits scaled by 1 + 0.3 i (distinct views, differentiable in `logits`)."""
  return jnp.stack([logits * (1.0 + 0.3 * i) for i in range(num_views)])


class _SingleView:
  """A multi-view loss called on [..., K] logits; every other attribute is the wrapped loss's."""

  def __init__(self, loss):
    self._loss = loss

  def __call__(self, logits, labels, **kwargs):
    return self._loss(views_of(logits, self._loss.num_views), labels, **kwargs)

  def call_with_aux(self, logits, labels, **kwargs):
    return self._loss.call_with_aux(views_of(logits, self._loss.num_views), labels, **kwargs)

  def __getattr__(self, name):
    return getattr(self._loss, name)


def single_view(loss):
  """`loss` as a function of [..., K] logits: a one-view loss itself, a multi-view loss on `views_of`."""
  if getattr(loss, "num_views", 1) == 1:
    return loss
  return _SingleView(loss)
