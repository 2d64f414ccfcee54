"""The process around a run, shared by the training and sweep CLIs: XLA flags, the compilation cache,
multi-host initialisation, and signals (Ctrl-C / SIGTERM stop a run at a consistent point)."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading

import jax

# XLA:CPU runs ResNet-20's convolutions faster through Eigen than through YNNPACK (measured in
# docs/PERFORMANCE.md, train_step); the flag only concerns CPU convolutions. A user's own setting wins.
CPU_XLA_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=-individual_convolution",)


def set_cpu_xla_flags() -> None:
  """Adds CPU_XLA_FLAGS to XLA_FLAGS; effective only before JAX starts a backend (the CLIs call it first)."""
  flags = os.environ.get("XLA_FLAGS", "")
  for flag in CPU_XLA_FLAGS:
    if flag.split("=")[0] not in flags:
      flags = f"{flags} {flag}".strip()
  os.environ["XLA_FLAGS"] = flags


def quiet_logs():
  """orbax logs every checkpoint step at INFO through absl; keep the console for our progress and results."""
  from absl import logging

  logging.set_verbosity(logging.WARNING)


def enable_compilation_cache(path: str | None = None) -> None:
  """Persistent XLA cache: identical programs (the same model's init, one loss's train step at another noise
  setting, a resumed run) are compiled once. XLA:CPU compiles RNG-heavy programs slowly (seconds each)."""
  path = path or os.environ.get("JAX_COMPILATION_CACHE_DIR") or os.path.expanduser("~/.cache/robust_losses/jax")
  jax.config.update("jax_compilation_cache_dir", path)


def slurm_multi_task() -> bool:
  """Inside a SLURM job step with more than one task (srun -n N), where JAX can find its peers itself."""
  return "SLURM_JOB_ID" in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1


def init_distributed(config) -> None:
  """Multi-host: one process per host (or per GPU), before JAX touches a device.

  Called when `config.distributed` is set (e.g. on TPU pod slices, where jax.distributed.initialize() finds
  everything itself), when JAX_COORDINATOR_ADDRESS is set (with JAX_NUM_PROCESSES and JAX_PROCESS_ID; any
  cluster), or inside a SLURM step with more than one task (JAX reads the SLURM_* variables). CPU processes use
  gloo collectives.
  """
  if not (config.distributed or "JAX_COORDINATOR_ADDRESS" in os.environ or slurm_multi_task()):
    return
  kwargs = {
    k: int(os.environ[v])
    for k, v in (("num_processes", "JAX_NUM_PROCESSES"), ("process_id", "JAX_PROCESS_ID"))
    if v in os.environ
  }
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(**kwargs)


def setup(config) -> None:
  """Everything a CLI does before JAX starts its backends."""
  set_cpu_xla_flags()
  quiet_logs()
  enable_compilation_cache()
  init_distributed(config)


class Interrupted(Exception):
  """Raised at a consistent point of the loop after SIGINT/SIGTERM arrived."""


@contextlib.contextmanager
def deferred_interrupts():
  """SIGINT (Ctrl-C) and SIGTERM (e.g. a scheduler's preemption) only set a flag while training: the loop
  stops at the next point where state, step and metrics belong together (after a compiled call, never
  inside one or inside a checkpoint write), saves and exits. A second Ctrl-C interrupts at once."""
  received = []
  main = threading.current_thread() is threading.main_thread()
  if main:

    def handler(signum, frame):
      if received and signum == signal.SIGINT:
        raise KeyboardInterrupt
      received.append(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
  try:
    yield lambda: bool(received)
  finally:
    if main:
      for sig, old in previous.items():
        signal.signal(sig, old)


def cli(run, description: str) -> None:
  """The `python -m experiments.<name> --config=... --workdir=...` entry point of `run(config, workdir)`."""
  from absl import app, flags
  from ml_collections import config_flags

  config_flags.DEFINE_config_file("config", None, description, lock_config=True)
  flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and results.")
  flags.mark_flags_as_required(["config", "workdir"])

  def main(argv):
    del argv
    config = flags.FLAGS.config
    setup(config.base if "base" in config else config)
    try:
      run(config, flags.FLAGS.workdir)
    except KeyboardInterrupt:
      sys.exit(130)

  app.run(main)
