"""Wall time of a digits sweep run the project's way vs the usual PyTorch way; vmapped-seed throughput.

  python -m benchmarks.sweep [--quick] [--json FILE] [--write-docs]

Sweep. A subset of configs/sweeps/digits.py (SUBSETS below) is run
  * as this project runs it: experiments.sweep.run in one fresh process (seeds and, with group_noise, noise
    settings vmapped as replicas of one compiled program per loss; whole-epoch lax.scan chunks; a fresh,
    empty persistent compilation cache, so every compilation is paid);
  * as PyTorch noisy-label repositories run a grid: one process per (loss, noise, seed), a Python loop
    over steps (benchmarks/torch_baseline.py: the same MLP, epochs, batch, optimizer, schedule, per-epoch
    evaluation), one after another; and, as the best case for PyTorch on this 2-core machine, two such
    processes at a time with one thread each.
Both walls include process start-up and imports. Mean final test accuracy is shown as a sanity check that
the two do the same work.

Seeds and epochs (one process, interleaved rounds): per-seed throughput of S vmapped seeds vs one (S = 1,
3, 8; one epoch of the digits default per call), and one digits epoch (19 steps of batch 64) as a lax.scan
chunk, as a Python loop calling a jitted one-step chunk 19 times (both as train.py calls them: a fresh step
array per call, metrics fetched after every call), and in PyTorch with 1 and 2 threads.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from benchmarks import _timing

TORCH_NAME = {"CE": "ce", "GCE q=0.7": "gce", "SCE": "sce", "MAE": "mae"}
SUBSETS = {
  "quick": {"losses": ["CE", "GCE q=0.7"], "noises": ["symmetric:0.4", "asymmetric:0.4"], "seeds": 3, "epochs": 3},
  "full": {
    "losses": ["CE", "GCE q=0.7", "SCE", "MAE"],
    "noises": ["symmetric:0.2", "symmetric:0.6", "asymmetric:0.4"],
    "seeds": 3,
    "epochs": 40,
  },
}


# ---------------------------------------------------------------------------------------------- workers
def jax_sweep_worker(losses, noises, seeds, epochs):
  t0 = time.perf_counter()
  from configs.sweeps import digits
  from experiments import report, runtime, sweep

  imported = time.perf_counter() - t0
  cfg = digits.get_config()
  cfg.only_losses, cfg.only_noise, cfg.num_seeds = ",".join(losses), ",".join(noises), seeds
  cfg.base_overrides = {"num_epochs": epochs, "progress": False}
  with tempfile.TemporaryDirectory() as tmp:
    runtime.enable_compilation_cache(os.path.join(tmp, "jax_cache"))  # as `python -m experiments.sweep`, but cold
    t1 = time.perf_counter()
    runs = sweep.run(cfg, os.path.join(tmp, "sweep"))
    ran = time.perf_counter() - t1
    acc = [r["test_accuracy_last"] for r in report.collect(os.path.join(tmp, "sweep"), runs)]
  return {
    "import_s": imported,
    "run_s": ran,
    "programs": len(runs),
    "replicas": len(acc),
    "mean_test_accuracy": statistics.mean(acc),
  }


def seeds_worker(quick):
  import jax.numpy as jnp
  import numpy as np
  import torch

  from benchmarks import _setup, torch_baseline

  counts = (1, 3) if quick else (1, 3, 8)
  chunks = {s: _setup.digits_chunk(num_seeds=s) for s in counts}
  secs = _timing.interleaved(chunks, repeats=3 if quick else 15, warmup=1)
  per_seed = {s: chunks[s].images_per_call / secs[s] for s in counts}
  seeds = [[s, secs[s] * 1e3, per_seed[s], per_seed[s] / per_seed[1]] for s in counts]

  epoch, one = _setup.digits_chunk(), _setup.digits_chunk(steps=1)
  spe = epoch.steps

  def chunk_call(chunk, start, n):  # what train.py does per call: the feed's batches, then the chunk
    chunk.feed.start_epoch(0, start)
    batch = chunk.feed.next(n)
    state, m = chunk.compiled(chunk.args[0], *chunk.args[1:4], batch, jnp.arange(start, start + n, dtype=jnp.int32))
    chunk.args[0] = state
    return {k: np.asarray(v) for k, v in m.items()}

  runs = {t: torch_baseline.DigitsRun("ce", "symmetric", 0.4, 0, 40) for t in (1, 2)}

  def torch_epoch(threads):
    torch.set_num_threads(threads)
    runs[threads].train_epoch()

  fns = {
    "lax.scan chunk (1 call/epoch)": lambda: chunk_call(epoch, 0, spe),
    "Python loop of jitted 1-step chunks": lambda: [chunk_call(one, i, 1) for i in range(spe)],
    "PyTorch, 1 thread": lambda: torch_epoch(1),
    "PyTorch, 2 threads": lambda: torch_epoch(2),
  }
  secs = _timing.interleaved(fns, repeats=5 if quick else 25, warmup=2)
  base = secs["lax.scan chunk (1 call/epoch)"]
  epochs = [[k, v * 1e3, v / base] for k, v in secs.items()]
  return {"seeds": seeds, "epochs": epochs}


# ----------------------------------------------------------------------------------------------- driver
def torch_grid(sub, threads, parallel):
  cmds = [
    [
      sys.executable,
      "-m",
      "benchmarks.torch_baseline",
      "digits",
      "--loss",
      TORCH_NAME[l],
      "--noise",
      n,
      "--seed",
      str(s),
      "--epochs",
      str(sub["epochs"]),
      "--threads",
      str(threads),
    ]
    for l in sub["losses"]
    for n in sub["noises"]
    for s in range(sub["seeds"])
  ]
  run = lambda cmd: json.loads(
    subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=_timing.REPO).stdout.strip().splitlines()[-1]
  )
  t0 = time.perf_counter()
  with concurrent.futures.ThreadPoolExecutor(parallel) as pool:
    outs = list(pool.map(run, cmds))
  return {
    "wall_s": time.perf_counter() - t0,
    "processes": len(cmds),
    "mean_test_accuracy": statistics.mean(o["test_accuracy"] for o in outs),
  }


def main():
  p = _timing.parser(__doc__.splitlines()[0])
  p.add_argument("--worker", choices=["jax", "seeds"])
  p.add_argument("--subset", default="full")
  args = p.parse_args()
  sub = SUBSETS["quick" if args.quick else args.subset]
  if args.worker == "jax":
    print(json.dumps(jax_sweep_worker(sub["losses"], sub["noises"], sub["seeds"], sub["epochs"])))
    return
  if args.worker == "seeds":
    print(json.dumps(seeds_worker(args.quick)))
    return
  q = ["--quick"] if args.quick else []
  t0 = time.perf_counter()
  jax_res = _timing.run_json(["-m", "benchmarks.sweep", "--worker", "jax", *q], timeout=1800)
  jax_wall = time.perf_counter() - t0
  if "error" in jax_res:
    raise RuntimeError(jax_res["error"])
  variants = [("PyTorch, 1 process per run, sequential, 1 thread", 1, 1)]
  if not args.quick:
    variants.append(("PyTorch, 1 process per run, 2 at a time, 1 thread each", 1, 2))
  torch_res = {label: torch_grid(sub, t, par) for label, t, par in variants}
  n_runs = len(sub["losses"]) * len(sub["noises"]) * sub["seeds"]
  rows = [
    [
      "JAX: experiments.sweep.run, one process",
      jax_wall,
      1.0,
      jax_res["mean_test_accuracy"],
      f"{jax_res['programs']} programs × {jax_res['replicas'] // jax_res['programs']} replicas; "
      f"imports {jax_res['import_s']:.1f} s",
    ]
  ]
  rows += [
    [label, r["wall_s"], r["wall_s"] / jax_wall, r["mean_test_accuracy"], f"{r['processes']} processes"]
    for label, r in torch_res.items()
  ]
  sw = _timing.run_json(["-m", "benchmarks.sweep", "--worker", "seeds", *q])
  if "error" in sw:
    raise RuntimeError(sw["error"])
  grid = (
    f"{len(sub['losses'])} losses ({', '.join(sub['losses'])}) × {len(sub['noises'])} noise settings "
    f"({', '.join(sub['noises'])}) × {sub['seeds']} seeds × {sub['epochs']} epochs = {n_runs} runs"
  )
  md = (
    f"Grid: {grid}, configs/digits.py otherwise.\n\n"
    + _timing.table(["runner", "wall s", "wall / JAX wall", "mean final test acc", "notes"], rows)
    + "\n\nPer-seed throughput of S vmapped seeds (one digits epoch per call):\n\n"
    + _timing.table(["seeds S", "ms per call", "seed-images/s", "per-seed throughput vs S=1"], sw["seeds"])
    + "\n\nOne digits epoch (19 steps, batch 64, MLP 256-256):\n\n"
    + _timing.table(["how", "ms per epoch", "vs lax.scan chunk"], sw["epochs"])
  )
  _timing.write_json(args.json, {"sweep": rows, **sw})
  _timing.report(args, "sweep", md, _timing.machine())


if __name__ == "__main__":
  main()
