"""Training throughput on this machine's accelerators, and the input and loss shares of a train step.

  python -m benchmarks.device [--batch 128] [--steps 50] [--repeats 5] [--losses a,b] [--json F] [--write-docs]
  python -m benchmarks.device --quick [--devices 2]   # CPU smoke test: small CNN, float32, batch 8, 1 step

Needs no network and no dataset: the data are synthetic CIFAR-shaped uint8 images [N, 32, 32, 3], 10
classes. For ResNet-20 and ResNet-18 (`preact_resnet18`, the project's CIFAR ResNet-18), float32 and
bfloat16 compute (`compute_dtype`; parameters stay float32), on 1 device and on all devices, it times the
project's compiled train chunk (train_lib.train_chunk_fn built by benchmarks/_setup.resnet_chunk: on-device
gather, crop+flip augmentation, SGD momentum, softmax CE, `--steps` steps per compiled call as
`steps_per_call` does; on CPU one loop-free step per call, the trainer's CPU default, so `--steps` should
stay small there). The per-device batch is fixed (`--batch`), so the all-device run has a global batch of
batch × devices.

For each model and dtype, on 1 device, two shares of the step:
  input   the streamed path (experiments/data/feeds.StreamFeed) puts each call's batches on the devices
          from the host: `to_devices` of uint8 images [T, B, 32, 32, 3] and ids [T, B], as the feed does
          after decoding. Reported: that host->device time per call against the compiled streamed
          chunk's time with its inputs already on the device, and one call as train.py makes it (the next
          call's batches put while the devices run this one, then the metrics fetched) against the
          chunk alone. Decoding is not included (benchmarks/pipeline.py measures it).
  loss    value and gradient of each loss in `--losses` alone, jitted, at the step's logits shape
          (float32 [B, 10]; models return float32 logits), against one step. It is a separate jitted
          call, so it includes one dispatch: an upper bound of the loss's share inside the fused step.

Timing: everything is compiled before timing (a warm-up round runs first, untimed); each call waits for
its results (block_until_ready); all variants of one model and dtype are timed in interleaved rounds
(benchmarks/_timing.interleaved) and the median of `--repeats` rounds is kept, so their ratios are
measured side by side.
"""

from __future__ import annotations

import dataclasses
import gc

from benchmarks import _timing

MODELS = {"ResNet-20": "resnet20", "ResNet-18": "preact_resnet18", "small CNN": "small_cnn"}
DEFAULT_MODELS = "ResNet-20,ResNet-18"
DTYPES = ("float32", "bfloat16")
LOSSES = "softmax_cross_entropy,binary_cross_entropy_dynamic_clipping"
IMAGE = (32, 32, 3)
# What "float32" convolutions and matmuls compute with at JAX's default precision (jax.default_matmul_precision).
PRECISION_NOTE = {"tpu": "float32 matmuls/convolutions in one bfloat16 pass", "gpu": "TF32 on Ampere and newer"}


def streamed_chunk(chunk, seed: int = 0):
  """`chunk`'s program fed as the streamed feed (experiments/data/feeds.StreamFeed) feeds it: (run, put, call).

  The one function here that calls experiments/ itself (the rest goes through benchmarks/_setup):
  mesh.process_rows, mesh.to_devices and train_lib.init_state, plus train_lib.train_chunk_fn through
  _setup._compile. put() places one call's batches (images uint8 [T, B, H, W, C], ids int32 [T, B], shared
  by every replica) on the devices, sharded over the batch axis, exactly as StreamFeed does after decoding.
  run() is the compiled chunk on batches already on the devices; call() is one call as train.py makes it
  (run on the batches put before, put the next call's, read the metrics).
  """
  import jax
  import numpy as np

  from benchmarks import _setup
  from experiments import mesh, train_lib

  prog = dataclasses.replace(chunk.prog, per_replica_batches=False)
  steps, batch = chunk.steps, prog.batch_size
  rows = mesh.process_rows(prog.mesh, batch)
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (steps, batch, *IMAGE), dtype=np.uint8)[:, rows]
  ids = rng.permutation(prog.num_train)[: steps * batch].reshape(steps, batch).astype(np.int32)[:, rows]

  def put():
    return {
      "images": mesh.to_devices(prog.mesh, images, batch, axis=1),
      "ids": mesh.to_devices(prog.mesh, ids, batch, axis=1),
    }

  keys, labels, is_noisy, step_ids = chunk.args[1], chunk.args[2], chunk.args[3], chunk.args[5]
  state = train_lib.init_state(prog, keys, IMAGE)
  args = [state, keys, labels, is_noisy, put(), step_ids]
  compiled, _, _ = _setup._compile(prog, args)

  def run():
    args[0], metrics = compiled(*args)
    _timing.block((args[0], metrics))

  pending = [put()]

  def call():
    args[0], metrics = compiled(*args[:4], pending[0], args[5])
    pending[0] = put()
    jax.tree.map(np.asarray, metrics)  # the trainer reads every call's metrics, which waits for the call
    _timing.block(args[0])

  return run, put, call


def loss_call(name: str, batch: int, num_classes: int = 10):
  """Value and gradient of the mean of loss `name` at logits [batch, num_classes], jitted, on one device."""
  import jax
  import jax.numpy as jnp

  import robust_losses

  loss = robust_losses.get(name)
  k1, k2 = jax.random.split(jax.random.key(0))
  logits = 3.0 * jax.random.normal(k1, (batch, num_classes), jnp.float32)
  labels = jax.random.randint(k2, (batch,), 0, num_classes)
  epoch = {"epoch": jnp.int32(10)} if loss.uses_epoch else {}  # as a training loop calls it: past any warm-up
  f = jax.jit(jax.value_and_grad(lambda z: jnp.mean(loss(z, labels, **epoch))))
  return lambda: _timing.block(f(logits))


def measure(model, dtype, args, losses, num_devices, loop_free):
  """All timings of one model and dtype, interleaved: {variant: seconds per call}, and compile seconds."""
  from benchmarks import _setup

  b, t = args.batch, args.steps
  one = _setup.resnet_chunk(batch_size=b, steps=t, dtype=dtype, num_devices=1, loop_free=loop_free, model=model)
  fns, compile_s, images = {"step 1": one}, {"step 1": one.compile_seconds}, {"step 1": one.images_per_call}
  if num_devices > 1:
    every = _setup.resnet_chunk(
      batch_size=b * num_devices, steps=t, dtype=dtype, num_devices=num_devices, loop_free=loop_free, model=model
    )
    fns[f"step {num_devices}"] = every
    compile_s[f"step {num_devices}"] = every.compile_seconds
    images[f"step {num_devices}"] = every.images_per_call
  run, put, call = streamed_chunk(one)
  fns["streamed step"] = run
  fns["input"] = lambda: _timing.block(put())
  fns["pipelined"] = call
  for name in losses:
    fns[f"loss {name}"] = loss_call(name, b)
  secs = _timing.interleaved(fns, repeats=args.repeats, warmup=1)
  return secs, compile_s, images


def rows_for(label, dtype, secs, compile_s, images, steps, losses):
  throughput = []
  base = images["step 1"] / secs["step 1"]
  for key in sorted(k for k in secs if k.startswith("step ")):
    n = int(key.split()[1])
    img_s = images[key] / secs[key]
    per_step_ms = 1e3 * secs[key] / steps
    throughput.append([label, dtype, n, images[key] // steps, img_s, per_step_ms, img_s / base, compile_s[key]])
  step_ms = 1e3 * secs["step 1"] / steps
  share = [
    label,
    dtype,
    1e3 * secs["streamed step"],
    1e3 * secs["input"],
    f"{100 * secs['input'] / secs['streamed step']:.2f} %",
    f"{100 * (secs['pipelined'] / secs['streamed step'] - 1):+.1f} %",
  ]
  share += [f"{1e3 * secs[f'loss {n}']:.3g} ms ({100 * 1e3 * secs[f'loss {n}'] / step_ms:.2f} %)" for n in losses]
  return throughput, share


def main():
  p = _timing.parser(__doc__.splitlines()[0])
  p.add_argument("--batch", type=int, default=128, help="per-device batch (the configs' global batch is 128)")
  p.add_argument("--steps", type=int, default=50, help="steps per compiled call (the configs' steps_per_call)")
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--models", default=DEFAULT_MODELS, help=f"comma-separated, from {list(MODELS)}")
  p.add_argument(
    "--dtypes", default=None, help=f"comma-separated, from {list(DTYPES)} (default: both; --quick: float32)"
  )
  p.add_argument("--losses", default=LOSSES, help="registry names whose value+grad is timed alone")
  p.add_argument("--devices", type=int, default=0, help="simulated CPU devices (CPU only: tests the all-device path)")
  args = p.parse_args()
  if args.quick:  # the smoke test's sizes: a ResNet's train step alone takes ~5-30 s to compile on 2 CPU cores
    args.batch, args.steps, args.repeats, args.models = 8, 1, 2, "small CNN"
    args.dtypes = args.dtypes or "float32"
  if args.devices:
    _timing.set_host_devices(args.devices)
  models = [m.strip() for m in args.models.split(",") if m.strip()]
  dtypes = [d.strip() for d in (args.dtypes or ",".join(DTYPES)).split(",") if d.strip()]
  losses = [n.strip() for n in args.losses.split(",") if n.strip()]
  bad = [m for m in models if m not in MODELS] + [d for d in dtypes if d not in DTYPES]
  if bad or min(args.batch, args.steps, args.repeats) < 1:
    p.error(f"models from {list(MODELS)}, dtypes from {list(DTYPES)}, positive sizes; got {bad or vars(args)}")

  import jax

  import robust_losses

  for name in losses:
    robust_losses.get(name)  # an unknown name or a required hyperparameter fails here, before compiling
  backend, devices = jax.default_backend(), jax.devices()
  loop_free = backend == "cpu"  # the trainer's default for convolutional models (train.loop_free)
  throughput, shares, results = [], [], {}
  for label in models:
    for dtype in dtypes:
      secs, compile_s, images = measure(MODELS[label], dtype, args, losses, len(devices), loop_free)
      results[f"{label} {dtype}"] = {"seconds_per_call": secs, "compile_seconds": compile_s, "images_per_call": images}
      t, s = rows_for(label, dtype, secs, compile_s, images, args.steps, losses)
      throughput += t
      shares.append(s)
      gc.collect()  # the chunks of this model and dtype are gone: free their device memory
  kind = devices[0].device_kind
  precision = jax.config.jax_default_matmul_precision or "default"
  if precision == "default" and backend in PRECISION_NOTE:
    precision += f" ({PRECISION_NOTE[backend]})"
  md = (
    ("**CPU run: an example of the table format, not an accelerator figure.**\n\n" if backend == "cpu" else "")
    + f"{kind} ({backend}), {len(devices)} device(s); jax {jax.__version__}; per-device batch {args.batch}, "
    f"{args.steps} step(s) per compiled call{' (loop-free)' if loop_free else ' (lax.scan)'}; matmul precision "
    f"{precision}; median of {args.repeats} interleaved rounds after a warm-up round. Synthetic uint8 "
    f"32×32×3 images, 10 classes, crop+flip augmentation, SGD momentum, softmax CE.\n\n"
    + _timing.table(
      ["model", "compute dtype", "devices", "global batch", "img/s", "ms per step", "vs 1 device", "compile s"],
      throughput,
    )
    + "\n\nShares of the 1-device step. Input: host->device time of one call's streamed batches (`to_devices`) "
    "vs the streamed chunk with its inputs in place, and a call as train.py makes it (next batches put while "
    "this call runs, metrics read) vs the chunk alone. Loss: value+grad of the loss alone at "
    f"[{args.batch}, 10], its own jitted call (one dispatch included), vs one step.\n\n"
    + _timing.table(
      ["model", "compute dtype", "streamed chunk ms", "input ms per call", "input / chunk", "train.py call vs chunk"]
      + [f"loss: {n}" for n in losses],
      shares,
    )
  )
  _timing.write_json(args.json, {"args": vars(args), "device_kind": kind, "backend": backend, "results": results})
  print(f"Command: `{_timing.command()}`\n")  # --write-docs puts it (and the machine) above the section
  _timing.report(args, "device", md, _timing.machine())


if __name__ == "__main__":
  main()
