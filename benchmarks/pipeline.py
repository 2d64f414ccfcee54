"""How much of the step goes to input (target < 5%), and the end-to-end epoch time of the digits default.

  python -m benchmarks.pipeline [--quick] [--json FILE] [--write-docs]

Streamed input (experiments/data/feeds.py), on an image folder of generated JPEGs: the host rate of the
streaming stage alone (grain reader threads decoding and resizing, images/s), the rate at which the train
step consumes images, and, in a streamed `train.train_and_evaluate`, the share of the steady epoch the
loop spends waiting for its next batches (the accelerator idles only then). On a CPU-only machine the
decode threads and the step share the same cores, so the share is an upper bound of what a device sees.

Input share. The training set lives on the device and each step gathers its batch (x[perm[i:i+B]]),
augments it (random crop + flip, per example) and normalises it inside the compiled chunk, so there is no
host input pipeline to wait for; the input cost is device time inside the step. It is measured by
compiling the same chunk three times, with train_lib._preprocess / data.augment_batch monkeypatched
during tracing, and timing the three in interleaved rounds:
  real      the project's chunk: gather + augment + normalise;
  no-aug    augment replaced by the identity (gather + normalise);
  ideal     the step fed a constant, already gathered and augmented batch (the gather is then dead code
            and XLA removes it): a zero-cost input pipeline.
  alone     the input stage by itself (permutation, then per step the same gather + augment + normalise
            via train_lib._preprocess), jitted, as an absolute cost that does not rely on a difference.
Input share = (real - ideal) / real, and alone / real; when the input cost is below the run-to-run noise
the difference can come out negative. ResNet-20 runs loop-free (train_lib.Program.loop_free, the CPU
default for conv models; see train_step.py: inside an XLA while loop its convolutions are ~20x slower).

End to end. train.train_and_evaluate on configs/digits.py (as shipped), timing every epoch from outside
(a train.Hook records a timestamp at every epoch end) and compilation with jax.monitoring's compile events;
the first epoch includes compilation, the steady-state epoch time is the median of the others. The
steady epoch is split into the train chunk call (+ fetching its metrics), evaluation and checkpointing by
wrapping those calls.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import tempfile
import time

from benchmarks import _timing


@contextlib.contextmanager
def patched(mode):
  import jax.numpy as jnp
  import numpy as np

  from experiments import data, train_lib

  orig_pre, orig_aug = train_lib._preprocess, data.augment_batch
  if mode == "no-aug":
    data.augment_batch = lambda keys, images, **kw: images
  elif mode == "ideal":

    def constant_batch(prog, images, key=None, positions=None, num_views=1):
      del num_views  # the benchmark trains a one-view loss
      rng = np.random.default_rng(0)
      batch = rng.integers(0, 256, images.shape, dtype=np.uint8)  # shape is static at trace time
      return data.normalize(jnp.asarray(batch), prog.mean, prog.std, dtype=prog.compute_dtype)

    train_lib._preprocess = constant_batch
  try:
    yield
  finally:
    train_lib._preprocess, data.augment_batch = orig_pre, orig_aug


def input_share(quick):
  from benchmarks import _setup

  builders = {"digits MLP (configs/digits.py), 19 steps of batch 64 per call": _setup.digits_chunk}
  if not quick:
    builders["ResNet-20, 32×32×3 crop+flip, 2 steps of batch 128 per call (loop-free)"] = lambda: _setup.resnet_chunk(
      batch_size=128, steps=2, loop_free=True
    )
  rows = []
  for label, build in builders.items():
    chunks = {}
    for mode in ("real", "no-aug", "ideal"):
      with patched(mode):
        chunks[mode] = build()
    fns = dict(chunks, alone=input_stage_fn(chunks["real"]))
    secs = _timing.interleaved(fns, repeats=3 if quick else 15, warmup=1)
    share = (secs["real"] - secs["ideal"]) / secs["real"]
    alone = secs["alone"] / secs["real"]
    rows.append(
      [
        label,
        secs["real"] * 1e3,
        secs["no-aug"] * 1e3,
        secs["ideal"] * 1e3,
        f"{100 * share:.1f}%",
        secs["alone"] * 1e3,
        f"{100 * alone:.1f}%",
        "yes" if max(share, alone) < 0.05 else "**no**",
      ]
    )
  return rows


def input_stage_fn(chunk):
  """The chunk's input stage alone: the feed's on-device gather of the call's batches, then per step
  augment + normalise (jitted), as the train step does before the model."""
  import jax
  import jax.numpy as jnp

  from experiments import train_lib

  prog, keys = chunk.prog, chunk.args[1]
  bs = prog.batch_size

  @jax.jit
  def run(key, batch, steps):
    def one(_, inputs):
      step, images = inputs
      start = (step % prog.steps_per_epoch) * bs
      return None, train_lib._preprocess(prog, images, jax.random.fold_in(key, step), positions=start + jnp.arange(bs))

    return jax.lax.scan(one, None, (steps, batch["images"][0]))[1]

  def stage():
    chunk.feed.start_epoch(0)
    return _timing.block(run(keys[0], chunk.feed.next(chunk.steps), jnp.arange(chunk.steps)))

  return stage


def end_to_end(quick):
  import jax

  from benchmarks import _setup
  from experiments import checkpoints, evaluation, records, train, train_lib

  compile_s, marks, parts = [0.0], [], {"chunk": [], "eval": [], "log": [], "checkpoint": []}
  jax.monitoring.register_event_duration_secs_listener(
    lambda event, secs, **kw: (
      compile_s.__setitem__(0, compile_s[0] + secs) if event.startswith("/jax/core/compile/") else None
    )
  )  # tracing, lowering and XLA compilation

  def timed(key, fn):
    def wrapper(*a, **k):
      t0 = time.perf_counter()
      out = fn(*a, **k)
      if key == "chunk":
        jax.block_until_ready(out)
      parts[key].append(time.perf_counter() - t0)
      return out

    return wrapper

  class EpochMarks(train.Hook):
    def on_epoch_end(self, record, state):
      marks.append(time.perf_counter())

  # The parts of an epoch are timed by wrapping the functions the loop calls; epoch ends come from a hook.
  orig = (records.Records.epoch, train_lib.train_chunk_fn, evaluation.Evaluator.metrics, checkpoints.Checkpointer.save)
  records.Records.epoch = timed("log", orig[0])
  train_lib.train_chunk_fn = lambda prog: timed("chunk", orig[1](prog))
  evaluation.Evaluator.metrics = timed("eval", orig[2])
  checkpoints.Checkpointer.save = timed("checkpoint", orig[3])
  config = _setup.digits_config(num_epochs=3 if quick else 40)
  try:
    with tempfile.TemporaryDirectory() as tmp:
      t0 = time.perf_counter()
      train.train_and_evaluate(config, os.path.join(tmp, "run"), hooks=[EpochMarks()])
      total = time.perf_counter() - t0
  finally:
    records.Records.epoch, train_lib.train_chunk_fn, evaluation.Evaluator.metrics, checkpoints.Checkpointer.save = orig
  epochs = [b - a for a, b in zip([t0] + marks[:-1], marks)]
  steady = statistics.median(epochs[1:])
  med = {k: statistics.median(v[1:]) for k, v in parts.items()}
  row = [
    config.num_epochs,
    total,
    compile_s[0],
    epochs[0],
    steady * 1e3,
    med["chunk"] * 1e3,
    med["eval"] * 1e3,
    med["log"] * 1e3,
    med["checkpoint"] * 1e3,
    (steady - sum(med.values())) * 1e3,
  ]
  return row


def jpeg_folder(root, num_images, side=256, num_classes=10):
  """train/ and test/ image folders of smooth random JPEGs (upsampled noise: file sizes like photos')."""
  import numpy as np
  from PIL import Image

  rng = np.random.default_rng(0)
  for split, n in (("train", num_images), ("test", max(num_images // 8, num_classes))):
    for i in range(n):
      folder = os.path.join(root, split, f"c{i % num_classes}")
      os.makedirs(folder, exist_ok=True)
      small = Image.fromarray(rng.integers(0, 256, (side // 8, side // 8, 3), dtype=np.uint8))
      small.resize((side, side), Image.Resampling.BICUBIC).save(os.path.join(folder, f"{i}.jpg"), quality=90)


def streamed(quick):
  """(decode-only images/s, train-step images/s, waiting share of the steady streamed epoch, row label)."""
  from benchmarks import _setup
  from configs import default
  from experiments import data, train, train_lib
  from experiments.data import feeds

  # --quick only checks that the measurement runs (CI): a tiny set; the figures come from the full run.
  # (ResNet-20's cold compile alone would be most of the smoke run: the quick run trains the small CNN.)
  num_images, image_size, batch, epochs, model = (
    (128, 32, 32, 2, "small_cnn") if quick else (2048, 64, 64, 3, "resnet20")
  )
  with tempfile.TemporaryDirectory() as tmp:
    jpeg_folder(tmp, num_images, side=4 * image_size)
    data_config = default.get_config().data
    data_config.update(name="image_folder", path=tmp, image_size=image_size, input="stream")
    ds = data.load(data_config)
    spe = len(ds.train) // batch
    stream = feeds.TrainStream(ds.train.source, feeds.host_epoch_order(0, len(ds.train)), batch, spe, slice(0, batch))
    t0 = time.perf_counter()
    for _ in stream.epoch(0):
      pass
    decode_rate = spe * batch / (time.perf_counter() - t0)

    waits, marks, chunk_s = [], [], []
    orig_epoch, orig_chunk = feeds.TrainStream.epoch, train_lib.train_chunk_fn

    def timed_epoch(self, epoch, batches_done=0):
      it = orig_epoch(self, epoch, batches_done)

      class Timed:
        def __next__(_):
          t = time.perf_counter()
          out = next(it)
          waits.append((epoch, time.perf_counter() - t))
          return out

      return Timed()

    class EpochMarks(train.Hook):
      def on_epoch_end(self, record, state):
        marks.append(time.perf_counter())

    def timed_chunk(prog):
      fn = orig_chunk(prog)

      def run(*a):
        t = time.perf_counter()
        out = _timing.block(fn(*a))
        chunk_s.append(time.perf_counter() - t)
        return out

      return run

    feeds.TrainStream.epoch, train_lib.train_chunk_fn = timed_epoch, timed_chunk
    config = _setup.digits_config(
      steps_per_call=10,
      model=model,
      batch_size=batch,
      num_epochs=epochs,
      train_eval_max_examples=256,
    )
    config.data.update(name="image_folder", path=tmp, image_size=image_size, input="stream")
    config.noise.kind, config.noise.rate = "none", 0.0
    try:
      train.train_and_evaluate(config, os.path.join(tmp, "run"), hooks=[EpochMarks()])
    finally:
      feeds.TrainStream.epoch, train_lib.train_chunk_fn = orig_epoch, orig_chunk
  # Steady epochs: all but the first (which compiles). Train time of an epoch = its chunk calls + its waits.
  steady_wait = sum(w for e, w in waits if e >= 1)
  steady_chunks = sum(chunk_s[spe:])
  step_rate = (len(chunk_s) - spe) * batch / steady_chunks if steady_chunks else float("nan")
  share = steady_wait / (steady_wait + steady_chunks)
  label = f"{num_images} JPEGs {4 * image_size}² → {image_size}², batch {batch}, {model}, {os.cpu_count()} CPU cores"
  return [
    label,
    decode_rate,
    step_rate,
    decode_rate / step_rate,
    f"{100 * share:.1f}%",
    "yes" if share < 0.05 else "**no**",
  ]


def main():
  args = _timing.parser(__doc__.splitlines()[0]).parse_args()
  rows = input_share(args.quick)
  e2e = end_to_end(args.quick)
  stream_row = streamed(args.quick)
  md = (
    "Input share of the compiled train chunk (ms per call, median of interleaved repeats; see the module "
    "docstring for the three variants):\n\n"
    + _timing.table(
      [
        "program",
        "real ms",
        "no-aug ms",
        "ideal input ms",
        "(real − ideal) / real",
        "input stage alone ms",
        "alone / real",
        "< 5%",
      ],
      rows,
    )
    + "\n\nEnd to end, `train.train_and_evaluate(configs/digits.py)` (1 seed, 19 steps/epoch, "
    "evaluation and a checkpoint every epoch):\n\n"
    + _timing.table(
      [
        "epochs",
        "total s",
        "trace+lower+compile s",
        "epoch 1 s (incl. compile)",
        "steady epoch ms",
        "train chunk ms",
        "eval ms",
        "log ms",
        "checkpoint ms",
        "rest ms",
      ],
      [e2e],
    )
    + "\n\nStreamed input (`--config.data.input=stream`): the streaming stage alone vs the train step's "
    "consumption, and the share of the steady streamed epoch spent waiting for batches:\n\n"
    + _timing.table(
      ["setting", "stream alone img/s", "train step img/s", "stream / step", "waiting share", "< 5%"], [stream_row]
    )
  )
  _timing.write_json(args.json, {"input_share": rows, "end_to_end": e2e, "streamed": stream_row})
  _timing.report(args, "pipeline", md, _timing.machine())


if __name__ == "__main__":
  main()
