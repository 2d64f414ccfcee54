"""The 1-D device mesh (axis ``batch``) and how host arrays become global arrays on it.

Shared by the data layer (which puts batches on the devices) and the compiled step (which reduces over the
axis), so neither imports the other.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = "batch"


def make_mesh(devices=None) -> jax.sharding.Mesh:
  devices = jax.devices() if devices is None else list(devices)
  return jax.make_mesh((len(devices),), (AXIS,), axis_types=(AxisType.Auto,), devices=devices)


def replicate(mesh, tree):
  """Puts host arrays on every device of `mesh` (also across processes: each passes the same data)."""
  sharding = NamedSharding(mesh, P())
  return jax.tree.map(lambda a: jax.make_array_from_process_local_data(sharding, np.asarray(a)), tree)


def process_rows(mesh, rows: int) -> slice:
  """The rows of a global [rows, ...] array, sharded over the batch axis, that this process's devices hold
  (contiguous: each device holds one block, and a process's devices are adjacent)."""
  sharding = NamedSharding(mesh, P(AXIS))
  blocks = sorted(
    (s[0].start or 0, s[0].stop or rows) for s in sharding.addressable_devices_indices_map((rows,)).values()
  )
  if not blocks:
    raise ValueError(
      f"process {jax.process_index()} has no device in the mesh ({mesh.size} of {jax.device_count()} "
      "devices); with several processes use num_devices=0 (all)"
    )
  start, stop = blocks[0][0], blocks[-1][1]
  if sum(b - a for a, b in blocks) != stop - start:
    raise ValueError(
      f"process {jax.process_index()}'s devices hold non-adjacent rows {blocks} of the batch; "
      "build the mesh with each process's devices next to each other (jax.devices() order)"
    )
  return slice(start, stop)


def to_devices(mesh, local: np.ndarray, global_rows: int, axis: int = 0):
  """One process's rows of a global array sharded over the batch axis (at `axis`) -> a global jax.Array."""
  spec = P(*([None] * axis), AXIS)
  shape = (*local.shape[:axis], global_rows, *local.shape[axis + 1 :])
  return jax.make_array_from_process_local_data(NamedSharding(mesh, spec), local, shape)
