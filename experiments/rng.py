"""Random streams of a run: everything random is derived from (seed, step) alone.

So a resumed run replays exactly what an uninterrupted run would have done, and nothing depends on the
number of devices or processes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

STREAMS = {"init": 0, "data": 1, "augment": 2}


def replica_keys(seeds) -> jax.Array:
  """One key per replica (seed), stacked: [R]."""
  return jnp.stack([jax.random.key(int(s)) for s in seeds])


def stream(key, name: str):
  """An independent RNG stream (init, data order, augmentation) of one seed's key."""
  return jax.random.fold_in(key, STREAMS[name])


def epoch_permutation(key, epoch, num_train: int):
  """The order in which epoch `epoch` visits the training set for seed key `key`: global batch t is
  positions [t·B, (t+1)·B). One definition for the device-resident and the streamed feeds."""
  return jax.random.permutation(jax.random.fold_in(stream(key, "data"), epoch), num_train)
