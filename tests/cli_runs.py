"""Helpers for tests that run the training CLI as real subprocesses (signals, several processes)."""

import os
import socket
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli(workdir, *flags, devices=1, extra_env=None):
  """Starts `python -m experiments.train` on configs/digits.py with `flags`, on `devices` CPU devices."""
  env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
  env.update(
    JAX_PLATFORMS="cpu",
    XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
    JAX_COMPILATION_CACHE_DIR=os.path.join(REPO, ".pytest_cache", "jax"),
    **(extra_env or {}),
  )
  cmd = [
    sys.executable,
    "-m",
    "experiments.train",
    "--config=configs/digits.py",
    f"--workdir={workdir}",
    "--config.progress=False",
    *flags,
  ]
  return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc, timeout=300):
  out, _ = proc.communicate(timeout=timeout)
  assert proc.returncode == 0, out[-3000:]
  return out


def history(workdir):
  """metrics.jsonl regrouped per epoch, {metric: [value per replica]}, without the wall-clock fields (which
  differ between two runs of the same training)."""
  from experiments import records

  return records.read_history(str(workdir), timing=False)


def lines(workdir):
  """Epochs logged so far (0 before the first)."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return 0
  return len(history(workdir))


def free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def coordinator_env(port, process_id, num_processes=2):
  return {
    "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
    "JAX_NUM_PROCESSES": str(num_processes),
    "JAX_PROCESS_ID": str(process_id),
  }
