"""Helpers for tests that run the training CLI as real subprocesses (signals, several processes)."""

import os
import signal
import socket
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli(workdir, *flags, devices=1, extra_env=None, module="experiments.train", config="configs/digits.py"):
  """Starts `python -m MODULE` (the trainer on configs/digits.py unless told) with `flags`, on `devices` CPU
  devices."""
  env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
  env.update(
    JAX_PLATFORMS="cpu",
    XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
    JAX_COMPILATION_CACHE_DIR=os.path.join(REPO, ".pytest_cache", "jax"),
    # On SIGABRT (sent by `finish` to a run that outlives its timeout) Python prints every thread's stack.
    PYTHONFAULTHANDLER="1",
    **(extra_env or {}),
  )
  quiet = ["--config.progress=False"] if module == "experiments.train" else []
  cmd = [sys.executable, "-m", module, f"--config={config}", f"--workdir={workdir}", *quiet, *flags]
  return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait(*procs, timeout=300):
  """Waits for every process (one deadline for all) and returns their outputs. A run still going at the
  deadline is a hang: every unfinished process gets SIGABRT, and the failure shows each one's output with the
  Python stack of every thread (PYTHONFAULTHANDLER, set by `cli`)."""
  deadline, outs, hung = time.monotonic() + timeout, [], []
  for p in procs:
    try:
      outs.append(p.communicate(timeout=max(deadline - time.monotonic(), 1))[0])
    except subprocess.TimeoutExpired:
      outs.append(None)
      hung.append(p)
  for p in hung:
    p.send_signal(signal.SIGABRT)
  outs = [out if out is not None else p.communicate(timeout=60)[0] for p, out in zip(procs, outs)]
  if hung:
    report = "\n".join(f"--- process {i} (pid {p.pid}):\n{out[-6000:]}" for i, (p, out) in enumerate(zip(procs, outs)))
    raise AssertionError(f"{len(hung)} of {len(procs)} run(s) still going after {timeout} s:\n{report}")
  return outs


def finish(*procs, timeout=300):
  """`wait`, then asserts each run exited 0; the outputs (one string for one process)."""
  outs = wait(*procs, timeout=timeout)
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-3000:]
  return outs[0] if len(procs) == 1 else outs


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
