"""The process around a run, shared by the training and sweep CLIs: XLA flags, the compilation cache,
multi-host initialisation, and signals (Ctrl-C / SIGTERM stop a run at a consistent point)."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading

import jax

from experiments import multihost

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


# Set to 1 (or pass --debug) to see the traceback of a user error instead of its one-line message.
DEBUG_ENV = "ROBUST_LOSSES_DEBUG"


def user_error(e: BaseException) -> bool:
  """Errors that describe a mistake in the config, the data or the workdir (every check in settings.py,
  data/, noise.py and checkpoints.py raises ValueError or a subclass), a diverged run, or another process's
  error (multihost.InputError names the process and its error): their message is the whole story. Anything
  else is a bug and keeps its traceback."""
  return isinstance(e, (ValueError, FileNotFoundError, NotADirectoryError, FloatingPointError, multihost.InputError))


def _flat_keys(config, prefix="") -> list[str]:
  out = []
  for key, value in config.items():
    out.append(prefix + key)
    if hasattr(value, "items") and not isinstance(value, dict):
      out += _flat_keys(value, f"{prefix}{key}.")
  return out


def unknown_key_message(config, overrides: list[str]) -> str | None:
  """'unknown config key ...; closest valid keys: ...' for the first `--config.<key>=...` override naming
  no key of `config`, else None."""
  import difflib

  keys = _flat_keys(config)
  for arg in overrides:
    key = arg.split("=", 1)[0][len("--config.") :]
    if key in keys:
      continue
    parent = key.rsplit(".", 1)[0] + "." if "." in key else ""
    siblings = [k for k in keys if k.startswith(parent) and "." not in k[len(parent) :]]
    leaf = key[len(parent) :]
    # Abbreviations ('lr': learning_rate) and substrings first, then spelling neighbours.
    initials = [k for k in siblings if "".join(w[:1] for w in k[len(parent) :].split("_")) == leaf]
    inside = [k for k in siblings if leaf in k[len(parent) :]]
    spelled = difflib.get_close_matches(key, siblings, n=5, cutoff=0.4) or difflib.get_close_matches(
      key, keys, n=5, cutoff=0.4
    )
    close = list(dict.fromkeys(initials + inside + spelled))[:5]
    hint = f"closest valid keys: {', '.join(close)}" if close else f"valid keys here: {', '.join(siblings[:30])}"
    return f"unknown config key {key!r} in {arg.split('=', 1)[0]}; {hint}"
  return None


def _load_config_file(argv: list[str]):
  """The config file named by --config=PATH[:ARG], loaded as config_flags would (None if not found)."""
  import importlib.util

  spec_arg = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
  if not spec_arg:
    return None
  path, _, arg = spec_arg.partition(":")
  spec = importlib.util.spec_from_file_location("_user_config", path)
  if spec is None or not os.path.exists(path):
    return None
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


def check_explicit_rate(config, argv) -> None:
  """A noise rate given on the command line for a kind that takes none ('none', 'matrix', 'real', 'file')
  would be recorded but do nothing: an error instead (a config file's inherited default rate is ignored)."""
  from experiments import noise

  given = [a for a in argv if a.split("=", 1)[0] in ("--config.noise.rate", "--config.base.noise.rate")]
  if given and config.noise.kind not in noise.RATE_KINDS:
    raise ValueError(
      f"{given[-1]} has no effect for noise.kind={config.noise.kind!r}: a rate applies only to kinds "
      f"{', '.join(noise.RATE_KINDS)}; leave it out for kind={config.noise.kind!r}"
    )


def _fail(message: str, code: int) -> None:
  print(f"error: {message}", file=sys.stderr, flush=True)
  sys.exit(code)


def cli(run, description: str) -> None:
  """The `python -m experiments.<name> --config=... --workdir=...` entry point of `run(config, workdir)`.

  A user error (see `user_error`) prints one line `error: ...` and exits with status 2 (1 for a diverged
  run); --debug or ROBUST_LOSSES_DEBUG=1 shows the traceback instead. An override of an unknown key
  (`--config.lr=0.1`) names the closest valid keys."""
  from absl import app, flags
  from ml_collections import config_flags

  config_flags.DEFINE_config_file("config", None, description, lock_config=True)
  flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and results.")
  flags.DEFINE_bool("debug", False, f"Show the traceback of user errors (or set {DEBUG_ENV}=1).")
  flags.mark_flags_as_required(["config", "workdir"])
  debug = lambda: "--debug" in sys.argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")

  def parse(argv):
    try:
      return flags.FLAGS(argv)
    except (AttributeError, KeyError) as e:  # ml_collections: an override of a key the config lacks
      if debug():
        raise
      try:
        message = unknown_key_message(_load_config_file(argv), [a for a in argv if a.startswith("--config.")])
      except Exception:  # the config file itself is broken: its own error is the message
        message = None
      _fail(message or f"{type(e).__name__}: {e}", 2)
    except flags.Error as e:
      _fail(
        f"{e}\n(python -m experiments.{os.path.splitext(os.path.basename(sys.argv[0]))[0]} --help lists the flags)", 2
      )

  def main(argv):
    del argv
    config = flags.FLAGS.config
    try:
      check_explicit_rate(config.base if "base" in config else config, sys.argv)
      setup(config.base if "base" in config else config)
      run(config, flags.FLAGS.workdir)
    except KeyboardInterrupt:
      multihost.stopped("interrupted")
      sys.exit(130)
    except Exception as e:
      multihost.stopped(f"{type(e).__name__}: {e}")
      if debug() or not user_error(e):
        raise
      _fail(f"{e}\n(--debug or {DEBUG_ENV}=1 shows the traceback)", 1 if isinstance(e, FloatingPointError) else 2)

  app.run(main, flags_parser=parse)
