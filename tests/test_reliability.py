"""Crash-resume and multi-process training, each run as real subprocesses of the CLI."""

import json
import os
import signal
import socket
import time

import numpy as np
from cli_runs import cli, coordinator_env, finish, free_port, history, lines, wait

SWEEP = "configs/sweeps/digits_full.py"


def complete_checkpoints(workdir):
  d = os.path.join(workdir, "checkpoints")
  return sorted(int(x) for x in os.listdir(d) if x.isdigit()) if os.path.isdir(d) else []


def test_kill_9_then_rerun_gives_the_uninterrupted_result(tmp_path):
  # 39 steps an epoch; 20 epochs leave seconds between the 2nd checkpoint and the end, so the kill lands
  # mid-run even on a loaded 2-core machine.
  flags = ("--config.num_epochs=20", "--config.batch_size=32")
  reference = cli(tmp_path / "ref", *flags)
  victim = cli(tmp_path / "run", *flags)
  deadline = time.time() + 240
  while len(complete_checkpoints(tmp_path / "run")) < 2 and victim.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  assert victim.poll() is None, "the run finished before it could be killed; make it longer"
  victim.send_signal(signal.SIGKILL)  # wherever it is: mid-step, mid-eval or mid-save
  victim.wait()
  finish(reference)
  assert not os.path.exists(tmp_path / "run" / "summary.json")

  out = finish(cli(tmp_path / "run", *flags))
  assert "Resuming from step" in out
  ref, run = history(tmp_path / "ref"), history(tmp_path / "run")
  assert [h["epoch"] for h in run] == list(range(1, 21))
  assert run == ref  # bit-identical metrics, every epoch
  with open(tmp_path / "run" / "summary.json") as f:
    assert json.load(f)["status"] == "completed"


def test_two_processes_equal_one_process(tmp_path):
  flags = ("--config.num_epochs=2",)
  single = cli(tmp_path / "one", *flags, devices=2)
  port = free_port()
  procs = [cli(tmp_path / "two", *flags, devices=1, extra_env=coordinator_env(port, i)) for i in range(2)]
  finish(*procs, single)
  one, two = history(tmp_path / "one"), history(tmp_path / "two")
  with open(tmp_path / "two" / "summary.json") as f:
    assert json.load(f)["num_devices"] == 2
  # Same mesh of 2 devices in both: each device reduces the same 32 examples in the same order, and the
  # cross-device mean of 2 partial results is order-free (a + b = b + a). Only the gloo vs in-process
  # all-reduce could round differently, by an ulp per step, which 2 epochs cannot grow past ~1e-5.
  for a, b in zip(one, two):
    np.testing.assert_allclose(a["train_loss"], b["train_loss"], rtol=1e-5)
    np.testing.assert_allclose(a["test_accuracy"], b["test_accuracy"], atol=1e-6)


def test_ctrl_c_at_several_moments_then_rerun_gives_the_uninterrupted_result(tmp_path):
  # Batch 16 and steps_per_call=4: an epoch is 20 compiled calls (78 steps, ~85 ms) and one short evaluation,
  # so most interrupts land mid-epoch, between compiled calls. (At batch 64 an epoch was 5 calls in ~6 ms,
  # about half of it evaluation, and in one CI run all four signals landed between epochs.)
  flags = (
    "--config.num_epochs=30",
    "--config.batch_size=16",
    "--config.steps_per_call=4",
    "--config.checkpoint_every_epochs=5",
  )
  reference = cli(tmp_path / "ref", *flags)
  stopped_at = []
  # Signal once after each of these many finished epochs (plus a little into the next one).
  for epochs, delay in ((2, 0.0), (7, 0.011), (15, 0.023), (22, 0.037)):
    victim = cli(tmp_path / "run", *flags)
    deadline = time.time() + 240
    while lines(tmp_path / "run") < epochs and victim.poll() is None and time.time() < deadline:
      time.sleep(0.005)
    time.sleep(delay)
    assert victim.poll() is None, "the run finished before it could be interrupted; make it longer"
    victim.send_signal(signal.SIGINT)
    out, _ = victim.communicate(timeout=60)  # Ctrl-C exits promptly, never hangs
    assert victim.returncode == 130, out[-3000:]
    assert "cannot schedule new futures" not in out and "Traceback" not in out, out[-3000:]
    stopped_at.append(int(out.split("saved a checkpoint at step ")[1].split(";")[0]))
    with open(tmp_path / "run" / "summary.json") as f:
      assert json.load(f)["status"] == "interrupted"
  out = finish(cli(tmp_path / "run", *flags))
  assert "Resuming from step" in out
  finish(reference)
  ref, run = history(tmp_path / "ref"), history(tmp_path / "run")
  steps_per_epoch = ref[0]["step"]
  assert any(s % steps_per_epoch for s in stopped_at), f"no interrupt landed mid-epoch: {stopped_at}"
  assert [h["epoch"] for h in run] == list(range(1, 31))
  assert run == ref  # bit-identical metrics, every epoch


def test_slurm_variables_start_multi_process_training(tmp_path):
  # Two processes that only see SLURM's variables (as under `srun -n 2`) find each other on loopback.
  flags = ("--config.num_epochs=1",)
  port = _free_port_in(range(61440, 65536))
  job_id = port - 61440  # JAX's SlurmCluster derives the coordinator port from the job id
  procs = [
    cli(
      tmp_path / "slurm",
      *flags,
      devices=1,
      extra_env={
        "SLURM_JOB_ID": str(job_id),
        "SLURM_NTASKS": "2",
        "SLURM_PROCID": str(i),
        "SLURM_LOCALID": str(i),
        "SLURM_STEP_NODELIST": "127.0.0.1",
        "SLURM_STEP_NUM_NODES": "1",
      },
    )
    for i in range(2)
  ]
  finish(*procs)
  with open(tmp_path / "slurm" / "summary.json") as f:
    assert json.load(f)["num_devices"] == 2


def test_a_process_that_stops_early_stops_the_others_promptly(tmp_path):
  # Process 1 stops on a config error before the first agreement; process 0 would wait for it an hour at the
  # workdir guard (and process 1 at its exit, for process 0) had process 1 not posted that it stopped.
  port = free_port()
  procs = [
    cli(
      tmp_path / "run",
      "--config.num_epochs=1",
      *(["--config.num_epochs=0"] if i else []),
      extra_env=coordinator_env(port, i),
    )
    for i in range(2)
  ]
  t0 = time.time()
  outs = wait(*procs, timeout=240)
  assert [p.returncode for p in procs] == [2, 2], outs
  assert "error: num_epochs=0" in outs[1], outs[1][-2000:]
  assert "error: process 1 stopped: ValueError: num_epochs=0" in outs[0], outs[0][-2000:]
  assert time.time() - t0 < 120, "a process waited for the one that stopped"


# Catches: every process of a sweep changing the workdir. Both moved the failed run aside (the second found it
# gone), and one read a summary.json for the tables while the other was writing it.
def test_two_processes_run_a_sweep_and_retry_its_failed_run(tmp_path):
  flags = (
    "--config.only_losses=CE,GCE q=0.7",
    "--config.only_noise=symmetric:0.4",
    "--config.num_seeds=1",
    "--config.base.num_epochs=1",
    "--config.base.progress=False",
  )

  def sweep():
    port = free_port()
    procs = [
      cli(tmp_path / "s", *flags, extra_env=coordinator_env(port, i), module="experiments.sweep", config=SWEEP)
      for i in range(2)
    ]
    return finish(*procs)

  sweep()
  runs = sorted(os.listdir(tmp_path / "s" / "runs"))
  assert len(runs) == 2 and os.path.exists(tmp_path / "s" / "results.md")
  path = tmp_path / "s" / "runs" / runs[0] / "summary.json"
  summary = json.loads(path.read_text())
  assert summary["num_devices"] == 2
  path.write_text(json.dumps({**summary, "status": "failed"}))
  outs = sweep()
  assert "1 run(s) to train" in outs[0] and f"{runs[0]}: failed last time" in outs[0], outs[0][-3000:]
  assert not any("run(s) to train" in line for line in outs[1].splitlines())  # process 0 alone reports
  moved = [n for n in os.listdir(tmp_path / "s" / "runs") if n not in runs]
  assert len(moved) == 1 and moved[0].startswith(f"{runs[0]}.old-"), moved  # moved aside once, never deleted
  assert json.loads(path.read_text())["status"] == "completed"


def _free_port_in(ports):
  for port in ports:
    with socket.socket() as s:
      try:
        s.bind(("127.0.0.1", port))
      except OSError:
        continue
      return port
  raise RuntimeError("no free port")
