"""Data-parallel scaling of the train chunk over 1, 2 and 4 simulated CPU devices.

  python -m benchmarks.scaling [--quick] [--json FILE] [--write-docs]

The process starts with XLA_FLAGS=--xla_force_host_platform_device_count=4 and builds the same program on
meshes of the first 1, 2 and 4 devices (the num_devices config key), timed in interleaved rounds. The
simulated devices are not extra hardware: all of them run on this machine's 2 cores, from one thread
pool, so this measures the overhead of the data-parallel program (sharding, all-reduces of gradients and
BatchNorm statistics) rather than a speed-up one could get from real devices.
  digits: configs/digits.py's MLP, batch 64, one epoch (19 steps) per call, as train.py runs it.
  resnet20: batch 128 of random 32×32×3 data, T=1 step per call, loop-free (no XLA while loop: inside
    one its convolutions take the slow path, see train_step.py).
"""

from __future__ import annotations

import sys

from benchmarks import _timing

DEVICES = (1, 2, 4)


def main():
  args = _timing.parser(__doc__.splitlines()[0]).parse_args()
  _timing.set_host_devices(max(DEVICES))
  from benchmarks import _setup

  builders = {
    "digits MLP, 1 epoch/call": lambda n: _setup.digits_chunk(num_devices=n),
    "ResNet-20, 1 step/call (loop-free)": lambda n: _setup.resnet_chunk(
      batch_size=16 if args.quick else 128, steps=1, num_devices=n, loop_free=True
    ),
  }
  rows, out = [], {}
  for label, build in builders.items():
    # --quick (the CI smoke run): the MLP on 2 meshes, ResNet-20 on 1 (each mesh is a cold compile).
    devices = (DEVICES[:2] if label.startswith("digits") else DEVICES[:1]) if args.quick else DEVICES
    chunks = {n: build(n) for n in devices}
    secs = _timing.interleaved(chunks, repeats=3 if args.quick else 9, warmup=1)
    for n in devices:
      rows.append(
        [label, n, secs[n] * 1e3, chunks[n].images_per_call / secs[n], secs[1] / secs[n], chunks[n].compile_seconds]
      )
    out[label] = {n: secs[n] for n in devices}
    print(f"  done {label}", file=sys.stderr, flush=True)
  md = (
    "Same global batch on meshes of 1, 2 and 4 simulated CPU devices, all sharing the same 2 cores "
    "(median of interleaved repeats):\n\n"
    + _timing.table(["program", "devices", "ms per call", "img/s", "speed vs 1 device", "compile s"], rows)
  )
  _timing.write_json(args.json, out)
  _timing.report(args, "scaling", md, _timing.machine())


if __name__ == "__main__":
  main()
