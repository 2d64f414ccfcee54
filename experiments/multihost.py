"""Host-side agreement between the processes of a multi-host run, without device collectives.

`jax.experimental.multihost_utils` offers only device collectives (`sync_global_devices`,
`process_allgather`): they queue behind the devices' work, so a process that failed to read its input
would keep the others waiting for a whole compiled call, and gloo's CPU collectives give up when processes
arrive more than 30 s apart. Agreement goes through JAX's distributed key-value store instead, which has no
public API yet; this module is the one place that reaches for it.
"""

from __future__ import annotations

import collections

import jax


class InputError(RuntimeError):
  """A step failed on some process; raised on every process, so none waits in a collective."""


class Agreement:
  """All processes agree on the outcome of a step that each ran alone (e.g. reading its rows).

  Each process posts its error ('' for none) to the distributed key-value store and reads everyone's.
  Processes call it the same number of times in the same order (the loop is deterministic), which names
  the keys.
  """

  _calls = collections.Counter()  # per name, over the process's lifetime: every key is written once

  def __init__(self, name: str):
    self.name = name

  def gather(self, value: str) -> list[str]:
    if jax.process_count() == 1:
      return [value]
    from jax._src import distributed  # no public API for the key-value store (module docstring)

    client = distributed.global_state.client
    key = f"robust_losses/{self.name}/{Agreement._calls[self.name]}"
    Agreement._calls[self.name] += 1
    client.key_value_set(f"{key}/{jax.process_index()}", "=" + value)  # '=': never an empty value
    return [client.blocking_key_value_get(f"{key}/{p}", 3_600_000)[1:] for p in range(jax.process_count())]

  def run(self, fn):
    """fn() on this process; if it raised here or anywhere, InputError on every process."""
    try:
      out, error = fn(), ""
    except Exception as e:  # noqa: BLE001 - reported to every process below, then re-raised
      out, error, exc = None, f"{type(e).__name__}: {e}", e
    errors = [(p, m) for p, m in enumerate(self.gather(error)) if m]
    if errors:
      if jax.process_count() == 1:
        raise exc
      raise InputError("; ".join(f"process {p}: {m}" for p, m in errors))
    return out


def barrier(name: str) -> None:
  """Every process posts, then waits for all (before the first cross-process collective)."""
  Agreement(name).gather("")
