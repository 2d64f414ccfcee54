"""Host-side agreement between the processes of a multi-host run, without device collectives.

`jax.experimental.multihost_utils` offers only device collectives (`sync_global_devices`,
`process_allgather`): they queue behind the devices' work, so a process that failed to read its input
would keep the others waiting for a whole compiled call, and gloo's CPU collectives give up when processes
arrive more than 30 s apart. Agreement goes through JAX's distributed key-value store instead, which has no
public API yet; this module is the one place that reaches for it.
"""

from __future__ import annotations

import collections
import time

import jax

_STOPPED = "robust_losses/stopped"  # key-value directory: one entry per process that stopped with an error


class InputError(RuntimeError):
  """A step failed on some process; raised on every process, so none waits in a collective."""


class PeerStopped(InputError):
  """Another process stopped with an error while this one waited for it in an Agreement."""


def _client():
  from jax._src import distributed  # no public API for the key-value store (module docstring)

  return distributed.global_state.client


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
    client = _client()
    key = f"robust_losses/{self.name}/{Agreement._calls[self.name]}"
    Agreement._calls[self.name] += 1
    client.key_value_set(f"{key}/{jax.process_index()}", "=" + value)  # '=': never an empty value
    return [_wait(client, f"{key}/{p}")[1:] for p in range(jax.process_count())]

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


def _wait(client, key: str, timeout_s: float = 3600.0) -> str:
  """The value of `key` once some process posts it; PeerStopped as soon as any process has posted that it
  stopped (`stopped`), which would otherwise leave this one waiting for the whole timeout."""
  deadline = time.monotonic() + timeout_s
  while True:
    try:
      return client.blocking_key_value_get(key, 1000)
    except jax.errors.JaxRuntimeError as e:
      if "DEADLINE_EXCEEDED" not in str(e) or time.monotonic() > deadline:
        raise
    gone = client.key_value_dir_get(_STOPPED + "/")
    if gone:
      raise PeerStopped("; ".join(f"process {k.rsplit('/', 1)[-1]} stopped: {v[1:]}" for k, v in sorted(gone)))


def stopped(message: str) -> None:
  """Posts that this process stops with `message`, so that the others stop waiting for it (see `_wait`).
  Called by the entry point on any error; a no-op in a single-process run."""
  if jax.process_count() == 1 or _client() is None:
    return
  try:
    _client().key_value_set(f"{_STOPPED}/{jax.process_index()}", "=" + message)
  except Exception:  # noqa: BLE001 - the coordinator may be gone already; the error itself is reported anyway
    pass


def barrier(name: str) -> None:
  """Every process posts, then waits for all (before the first cross-process collective)."""
  Agreement(name).gather("")
