"""Images/s of the data-parallel ResNet-20 train step (train_lib.train_chunk_fn) vs PyTorch, and what moves it.

  python -m benchmarks.train_step [--quick] [--json FILE] [--write-docs]

Every variant runs in a fresh subprocess (XLA_FLAGS are read once, at start-up). Inside it, three things are
timed in interleaved rounds (median of repeats after a warm-up round), so their ratios are immune to the
machine's drift: the JAX train chunk (T steps of batch 128, random uint8 32×32×3 data, on-device gather +
crop/flip augmentation, SGD momentum, CE), T PyTorch steps of the same network and batch on a fixed
pre-normalised batch (torch.set_num_threads(2), NCHW, forward + CE + backward + SGD momentum step, no
augmentation), and a jitted float32 2048×2048 matmul, whose 2n³/t serves as the machine's achievable peak.

Variants: train_chunk_fn's lax.scan, which XLA runs as a while loop (the default off CPU), and the chunk
with no while loop (Program.loop_free, lax.scan with unroll=0: the project's default on CPU for conv
models). XLA:CPU only rewrites convolutions into the layout its fast Eigen/YNNPACK kernels need in the
entry computation (ConvCanonicalization visits module->entry_computation() only), so inside a while loop
the gradient convolutions fall back to naive generated loops (jax-ml/jax#12868). Then XLA_FLAGS,
bfloat16 compute and the chunk length T on top of the loop-free chunk.

Achieved FLOP/s = XLA cost analysis FLOPs of one step ÷ time per step. XLA's cost analysis counts a while-
loop body once, so for the lax.scan chunk its FLOPs are one step's; for loop-free chunks they are divided by T.

A second table times a single 3×3 convolution (forward + both gradients) at each ResNet-20 stage shape:
JAX NHWC under jit, the same inside a lax.scan of length 1, JAX NCHW, and PyTorch NCHW / channels_last.
"""

from __future__ import annotations

import json
import sys

from benchmarks import _timing

THREADS = 2
# (XLA_FLAGS, label) of the variants tried, each in a fresh process.
FLAGS = [
  ("", "baseline"),
  ("--xla_cpu_multi_thread_eigen=false", "single-threaded Eigen"),
  ("--xla_cpu_use_thunk_runtime=false", "legacy runtime (flag deprecated: ignored)"),
  ("--xla_cpu_use_onednn=true", "oneDNN"),
  ("--xla_cpu_experimental_onednn_custom_call=true", "oneDNN custom calls"),
  ("--xla_cpu_use_xnnpack=true", "XNNPACK"),
  ("--xla_cpu_experimental_ynn_fusion_type=", "YNNPACK fusions off"),
  ("--xla_cpu_experimental_ynn_fusion_type=-individual_convolution", "YNNPACK convolutions off"),
  ("--xla_cpu_enable_fast_math=true", "fast math"),
]
CONV_FLAGS = ("baseline", "oneDNN custom calls", "YNNPACK fusions off", "YNNPACK convolutions off")
REJECTED = ["--xla_cpu_use_mkl_dnn=true"]  # tried: not a flag of jaxlib 0.10.2 (XLA aborts at start-up)
STAGES = [(32, 16), (16, 32), (8, 64)]  # (spatial side, channels) of ResNet-20's three stages


# ----------------------------------------------------------------------------------------------- worker
def torch_steps(batch, steps, channels_last=False):
  import torch

  from benchmarks import torch_baseline

  torch.set_num_threads(THREADS)
  _, step = torch_baseline.resnet20_step_fn(batch, channels_last)
  return lambda: [step() for _ in range(steps)][-1].item()


def matmul_fn(n=2048):
  import jax
  import jax.numpy as jnp

  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  f = jax.jit(lambda a: a @ a)
  return (lambda: _timing.block(f(a))), 2 * n**3


def step_worker(args):
  from benchmarks import _setup

  chunk = _setup.resnet_chunk(batch_size=args.batch, steps=args.steps, dtype=args.dtype, loop_free=args.loop_free)
  mm, mm_flops = matmul_fn()
  fns = {"jax": chunk, "torch": torch_steps(args.batch, args.steps), "matmul": mm}
  secs = _timing.interleaved(fns, repeats=args.repeats, warmup=args.warmup)
  step_flops = chunk.flops / (args.steps if args.loop_free else 1)
  peak = mm_flops / secs["matmul"]
  achieved = step_flops * args.steps / secs["jax"]
  return {
    "jax_img_s": chunk.images_per_call / secs["jax"],
    "torch_img_s": args.batch * args.steps / secs["torch"],
    "compile_s": chunk.compile_seconds,
    "gflop_per_step": step_flops / 1e9,
    "peak_gflop_s": peak / 1e9,
    "achieved_gflop_s": achieved / 1e9,
    "fraction_of_peak": achieved / peak,
  }


def conv_worker(args):
  import jax
  import jax.numpy as jnp
  import torch

  torch.set_num_threads(THREADS)
  out = []
  for side, ch in STAGES[:1] if args.quick else STAGES:
    b = args.batch
    key = jax.random.key(0)
    fns = {}
    for layout in ("NHWC", "NCHW"):
      xs = (b, side, side, ch) if layout == "NHWC" else (b, ch, side, side)
      ws = (3, 3, ch, ch) if layout == "NHWC" else (ch, ch, 3, 3)
      x, w = jax.random.normal(key, xs), jax.random.normal(key, ws) * 0.1
      dn = (layout, "HWIO" if layout == "NHWC" else "OIHW", layout)
      loss = lambda x, w, dn=dn: jnp.sum(
        jnp.tanh(jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dn))
      )
      grad = jax.value_and_grad(loss, (0, 1))
      f = jax.jit(grad)
      fns[f"jax {layout} jit"] = lambda f=f, x=x, w=w: _timing.block(f(x, w))
      if layout == "NHWC":
        # x enters as the scanned-over input, so the body cannot be hoisted out of the loop.
        s = jax.jit(lambda x, w, grad=grad: jax.lax.scan(lambda c, xi: (c, grad(xi, w)), 0, x[None])[1])
        fns["jax NHWC in lax.scan"] = lambda s=s, x=x, w=w: _timing.block(s(x, w))
    for cl in (False, True):
      conv = torch.nn.Conv2d(ch, ch, 3, 1, 1, bias=False)
      x = torch.randn(b, ch, side, side, requires_grad=True)
      if cl:
        conv, x = (
          conv.to(memory_format=torch.channels_last),
          x.detach().to(memory_format=torch.channels_last).requires_grad_(),
        )

      def tstep(conv=conv, x=x):
        conv.weight.grad = x.grad = None
        torch.tanh(conv(x)).sum().backward()

      fns["torch " + ("channels_last" if cl else "NCHW")] = tstep
    secs = _timing.interleaved(fns, repeats=args.repeats, warmup=1)
    flops = 3 * 2 * b * side * side * ch * ch * 9  # forward + two gradient convolutions
    out.append({"shape": f"{b}×{side}×{side}×{ch}", **{k: flops / v / 1e9 for k, v in secs.items()}})
  return out


# ------------------------------------------------------------------------------------------------ driver
def variant(worker_args, flags="", timeout=900):
  res = _timing.run_json(
    ["-m", "benchmarks.train_step", "--worker", *worker_args], env={"XLA_FLAGS": flags}, timeout=timeout
  )
  print(f"  {flags or '(no flags)'} {' '.join(worker_args)}: {json.dumps(res)[:200]}", file=sys.stderr, flush=True)
  return res


def main():
  p = _timing.parser(__doc__.splitlines()[0])
  p.add_argument("--worker", choices=["step", "conv"], default=None)
  p.add_argument("--batch", type=int, default=128)
  p.add_argument("--steps", type=int, default=2)
  p.add_argument("--dtype", default="float32")
  p.add_argument("--loop-free", action="store_true")
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--warmup", type=int, default=1)
  args = p.parse_args()
  if args.worker:
    print(json.dumps(step_worker(args) if args.worker == "step" else conv_worker(args)))
    return
  q = args.quick
  b = ["--batch", "8" if q else "128"]
  fast = b + ["--loop-free", "--repeats", "2" if q else "3"]
  runs = [  # (table label, XLA_FLAGS, worker arguments)
    (
      "lax.scan chunk (while loop), T=1, f32 (1 timed call)",
      "",
      b + ["--steps", "1", "--repeats", "1", "--warmup", "0"],
    ),
  ]
  if not q:
    runs += [
      ("loop-free (CPU default), T=1, f32", "", fast + ["--steps", "1"]),
      ("loop-free, T=2, f32", "", fast + ["--steps", "2"]),
      ("loop-free, T=1, bfloat16 compute", "", fast + ["--steps", "1", "--dtype", "bfloat16"]),
    ]
    runs += [(f"loop-free, T=1, f32, {label}", flags, fast + ["--steps", "1"]) for flags, label in FLAGS[1:]]
  rows, results = [], {}
  for label, flags, wargs in runs:
    r = variant(["step", *wargs], flags)
    results[label] = dict(r, xla_flags=flags, args=wargs)
    if "error" in r:
      rows.append([label, f"`{flags}`", r["error"][:80], "", "", "", "", ""])
      continue
    rows.append(
      [
        label,
        f"`{flags}`" if flags else "",
        r["jax_img_s"],
        r["torch_img_s"],
        r["jax_img_s"] / r["torch_img_s"],
        r["compile_s"],
        r["achieved_gflop_s"],
        f"{100 * r['fraction_of_peak']:.1f}% of {r['peak_gflop_s']:.0f}",
      ]
    )
  conv_flag_sets = [FLAGS[0]] if q else [f for f in FLAGS if f[1] in CONV_FLAGS]
  conv_rows = []
  for flags, label in conv_flag_sets:
    res = variant(["conv", *b, "--repeats", "3"] + (["--quick"] if q else []), flags)
    results[f"conv {flags}"] = res
    if isinstance(res, dict):
      conv_rows.append([label, f"`{flags}`", res.get("error", "")[:80], "", "", "", "", ""])
      continue
    for r in res:
      conv_rows.append(
        [
          label,
          f"`{flags}`" if flags else "",
          r["shape"],
          *[
            r[k] for k in ("jax NHWC jit", "jax NHWC in lax.scan", "jax NCHW jit", "torch NCHW", "torch channels_last")
          ],
        ]
      )
  batch = b[1]
  md = (
    f"ResNet-20, global batch {batch}, 1 CPU device, torch threads {THREADS}; each row is one fresh process "
    f"(its `XLA_FLAGS` shown), JAX / PyTorch / matmul interleaved inside it. Peak = jitted f32 2048² matmul in "
    f"the same process. Flags that XLA rejects (abort at start-up): {', '.join(f'`{f}`' for f in REJECTED)}.\n\n"
    + _timing.table(
      [
        "JAX variant",
        "XLA_FLAGS",
        "JAX img/s",
        "PyTorch img/s",
        "JAX / PyTorch",
        "compile s",
        "JAX GFLOP/s",
        "of matmul peak",
      ],
      rows,
    )
    + f"\n\nOne 3×3 convolution, forward + input and kernel gradients (batch {batch}), GFLOP/s "
    "(3 × 2·B·H·W·C²·9 FLOPs ÷ median time):\n\n"
    + _timing.table(
      [
        "XLA variant",
        "XLA_FLAGS",
        "B×H×W×C",
        "JAX NHWC jit",
        "JAX NHWC in lax.scan",
        "JAX NCHW jit",
        "torch NCHW",
        "torch channels_last",
      ],
      conv_rows,
    )
  )
  _timing.write_json(args.json, results)
  _timing.report(args, "train_step", md, _timing.machine())


if __name__ == "__main__":
  main()
