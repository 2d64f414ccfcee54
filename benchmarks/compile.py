"""Cold compile time of the train step (train_lib.train_chunk_fn) per model, and its run time.

  python -m benchmarks.compile [--quick] [--baseline DIR] [--repeats N] [--models A,B] [--batch B]
                               [--json FILE] [--write-docs]

Compilation dominates short runs, resumed runs and the test suite on CPU (XLA:CPU compiles every fused
kernel with LLVM), so it is measured per model: each measurement is a fresh process with no persistent
compilation cache, which builds the project's train chunk (benchmarks/_setup.resnet_chunk: a batch
(default 8) of 32×32×3 random images, CE, SGD with momentum, CIFAR augmentation, one device, the CPU
default loop-free chunk of one step), compiles it ahead of time and counts the XLA:CPU kernels of the
compiled module.
It then times calls of the chunk against a jitted 2048² matmul in the same process (interleaved), so that
the run-time column (chunk / matmul) can be compared between processes on a machine whose speed drifts.

--baseline DIR measures another checkout of the project too (e.g. `git worktree add DIR <older commit>`),
alternating its processes with this checkout's (baseline, current, baseline, ...), `--repeats` of each;
the medians are reported side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

from benchmarks import _timing

MODELS = ("resnet20", "imagenet_resnet18", "imagenet_resnet50")
QUICK_MODELS = ("resnet20",)


def worker(checkout: str, model: str, batch: int) -> dict:
  # The checkout's experiments/ and robust_losses/ (not imported yet); benchmarks/ stays this one's, already
  # imported, so both checkouts are measured by the same harness (_setup, kernel_count, matmul_fn).
  sys.path.insert(0, checkout)
  import jax

  from benchmarks import _setup
  from benchmarks.losses import kernel_count
  from benchmarks.train_step import matmul_fn

  jax.config.update("jax_enable_compilation_cache", False)
  chunk = _setup.resnet_chunk(batch_size=batch, steps=1, model=model, loop_free=True)
  matmul, _ = matmul_fn()
  secs = _timing.interleaved({"chunk": chunk, "matmul": matmul}, repeats=5, warmup=1)
  return {
    "compile_s": chunk.compile_seconds,
    "kernels": kernel_count(chunk.compiled),
    "chunk_over_matmul": secs["chunk"] / secs["matmul"],
    "chunk_ms": secs["chunk"] * 1e3,
  }


def measure(checkout: str, model: str, batch: int) -> dict:
  res = _timing.run_json(
    ["-m", "benchmarks.compile", "--worker", model, "--checkout", checkout, "--batch", str(batch)],
    env={"JAX_PLATFORMS": "cpu"},
    timeout=900,
  )
  print(f"  {model} {checkout}: {json.dumps(res)}", file=sys.stderr, flush=True)
  if "error" in res:
    raise SystemExit(f"{model} at {checkout}: {res['error']}")
  return res


def main():
  p = _timing.parser(__doc__.splitlines()[0])
  p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
  p.add_argument("--checkout", default=_timing.REPO, help=argparse.SUPPRESS)
  p.add_argument("--baseline", default=None, help="another checkout of the project, measured alternately")
  p.add_argument("--repeats", type=int, default=None, help="processes per model and checkout")
  p.add_argument("--models", default=None, help=f"comma-separated, default {','.join(MODELS)}")
  p.add_argument("--batch", type=int, default=8)
  args = p.parse_args()
  if args.worker:
    print(json.dumps(worker(args.checkout, args.worker, args.batch)))
    return
  checkouts = {"current": _timing.REPO}
  if args.baseline:
    if not os.path.isdir(os.path.join(args.baseline, "experiments")):
      raise SystemExit(f"--baseline {args.baseline}: no experiments/ there")
    checkouts = {"baseline": os.path.abspath(args.baseline), **checkouts}
  repeats = args.repeats or (1 if args.quick else 3)
  models = args.models.split(",") if args.models else QUICK_MODELS if args.quick else MODELS
  results = {}
  for model in models:
    runs = {name: [] for name in checkouts}
    for _ in range(repeats):
      for name, path in checkouts.items():
        runs[name].append(measure(path, model, args.batch))
    results[model] = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in runs.items()}
  headers, rows = ["model"], []
  for name in checkouts:
    headers += [f"compile s ({name})", f"kernels ({name})", f"chunk / matmul ({name})"]
  if args.baseline:
    headers += ["compile current / baseline", "run current / baseline"]
  for model, by in results.items():
    row = [model]
    for name in checkouts:
      row += [by[name]["compile_s"], int(by[name]["kernels"]), by[name]["chunk_over_matmul"]]
    if args.baseline:
      row += [
        by["current"]["compile_s"] / by["baseline"]["compile_s"],
        by["current"]["chunk_over_matmul"] / by["baseline"]["chunk_over_matmul"],
      ]
    rows.append(row)
  md = (
    f"Train chunk of one step (batch {args.batch}, 32×32×3, CE, SGD momentum, augmentation, 1 CPU device, "
    f"loop-free), compiled cold in a fresh process (no compilation cache); median of {repeats} process(es) "
    "per model"
    + (f" and checkout, alternating; baseline: `{args.baseline}`" if args.baseline else "")
    + ". Kernels: XLA:CPU thunks of the compiled module. Chunk / matmul: one call's time over a jitted "
    "2048² f32 matmul's in the same process (a run-time measure that the machine's drift cancels from).\n\n"
    + _timing.table(headers, rows)
  )
  _timing.write_json(args.json, results)
  # One docs section per batch size, so a run at another batch adds its table instead of replacing this one.
  _timing.report(args, "compile" if args.batch == 8 else f"compile-batch{args.batch}", md, _timing.machine())


if __name__ == "__main__":
  main()
