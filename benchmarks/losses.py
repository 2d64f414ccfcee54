"""Cost of every registered loss relative to softmax cross entropy: jitted value-and-grad of the mean loss.

  python -m benchmarks.losses [--quick] [--json FILE] [--write-docs] [--only NAME,...] [--repeats N]
                              [--baseline DIR [--baseline-first]] [--shapes BxK,...] [--ids-only]
  python -m benchmarks.losses --clipping --devices 4   # dynamic clipping, global vs local statistic
  python -m benchmarks.losses --statistics             # the clipping statistics alone, by batch size

What is timed: jit(f)(logits) where f runs `inner` iterations of (loss, grad) = value_and_grad(mean(loss))
and z <- z - 1e-3 * grad inside a lax.fori_loop. The loop makes one call long enough (>~1 ms) to be timed
without the per-call dispatch overhead (~10 µs, which would otherwise make every loss look like CE at
small sizes); the dependence on the previous gradient stops XLA from hoisting the work out of the loop.
All losses of one (shape, dtype) are timed in interleaved rounds, and the ratio to CE of the same round
set is reported. A second, separately compiled copy of the reference is timed with them: its ratio to the
reference (ideally 1) shows how much the machine's load moved the figures of that run. Hyperparameters are
the registry defaults; the correction losses get a fixed symmetric-noise transition matrix (0.6 on the
diagonal); losses with a schedule or per-example state get what a training loop passes (epoch 10, the initial
state rows).

--baseline DIR times the losses of another checkout of the library as well (e.g. `git worktree add DIR
<older commit>`), in the same process and the same interleaved rounds, as extra "baseline" columns: a
before/after comparison that the machine's load cannot skew between two runs. (A baseline without
integer labels needs --onehot-only.)

The clipping section runs shard_map over N simulated CPU devices (which share the machine's cores) and
compares clipped CE with the statistic taken over the global batch (axis_name='batch': psum / all_gather)
against the same program with per-device statistics (axis_name=None).

The statistics section times `batch_threshold` alone (forward only, as in training: the threshold is behind
stop_gradient) on a batch of losses from two log-normal modes, at several batch sizes, with CE's value and
gradient at 1024×100 in the same rounds for scale, and counts the kernels (thunks) XLA:CPU runs per call:
what separates a statistic's fixed launch cost from its per-example work.
"""

from __future__ import annotations

import sys

from benchmarks import _timing

SHAPES = [(128, 10), (1024, 100), (4096, 1000)]
QUICK_SHAPES = [(128, 10)]
JSON_CASE = (1024, 100)
REFERENCE = "optax integer-label CE"
REFERENCE_COPY = "optax integer-label CE, second copy"
# Targets (issues #9 and #19), as ratios to optax's integer-label CE with integer labels at 1024×100 float32:
# losses whose formula needs only the labelled class; those with per-class normalisers, one-vs-all terms or
# a transition matrix; and those that add a statistic of the whole batch (dynamic clipping; decided in #19:
# ≤ 3×, where clipped CE's old label-only line of 1.25× was dropped).
LABEL_ONLY = (
  "tamed_cross_entropy",
  "generalized_cross_entropy",
  "truncated_generalized_cross_entropy",
  "mean_absolute_error",
  "reverse_cross_entropy",
  "symmetric_cross_entropy",
  "normalized_cross_entropy",
  "focal_loss",
  "active_passive_loss",
  "softmax_cross_entropy",
)
PER_CLASS = (
  "normalized_focal_loss",
  "normalized_generalized_cross_entropy",
  "mean_squared_error",
  "sigmoid_binary_cross_entropy",
  "bootstrapped_cross_entropy",
  "forward_corrected_cross_entropy",
  "backward_corrected_cross_entropy",
)
BATCH_STATISTIC = ("clipped_cross_entropy", "clipped_focal_loss", "binary_cross_entropy_dynamic_clipping")
TARGETS = {"label-only": 1.25, "per-class": 2.5, "batch-statistic": 3.0}
STATISTICS = ("mean", "median", "quantile", "mean_std", "gmm")
BASELINE = "@baseline"  # suffix of a label form timed with the --baseline library


def transition(k):
  import numpy as np

  return np.full((k, k), 0.4 / (k - 1)) + np.eye(k) * (0.6 - 0.4 / (k - 1))


def load_baseline(path):
  """The `robust_losses` package of another checkout at `path`, imported next to this one.

  Its modules are loaded under their own names and then moved out of sys.modules, so `import
  robust_losses` keeps meaning this checkout; the baseline's functions keep references to their own modules.
  """
  import importlib
  import os

  def take():
    return {m: sys.modules.pop(m) for m in list(sys.modules) if m == "robust_losses" or m.startswith("robust_losses.")}

  current = take()
  sys.path.insert(0, os.path.abspath(path))
  try:
    module = importlib.import_module("robust_losses")
  finally:
    sys.path.remove(os.path.abspath(path))
    take()
    sys.modules.update(current)
  if not os.path.abspath(module.__file__).startswith(os.path.abspath(path) + os.sep):
    raise SystemExit(f"--baseline {path}: no robust_losses package there (found {module.__file__})")
  return module


def build(name, k, module=None):
  import robust_losses

  module = module or robust_losses
  # Required hyperparameters a trainer fills from the noise model: a 40%-symmetric T, a 0.2 noise rate.
  given = {"transition_matrix": transition(k), "noise_rate": 0.2}
  return module.get(name, **{h: given[h] for h in module.required_hparams(name)})


def kind(name) -> str:
  if name in BATCH_STATISTIC:
    return "batch-statistic"
  return "label-only" if name in LABEL_ONLY else "per-class" if name in PER_CLASS else "other"


def loop_kwargs(loss, b, k):
  """What a training loop passes a loss: the epoch (past any warm-up) and the batch's state rows (the initial
  ones: ELR's zero targets, truncated Lq's unit weights). Losses with state or a schedule need them."""
  import jax.numpy as jnp

  kwargs = {"epoch": jnp.int32(10)} if loss.uses_epoch else {}
  state = loss.init_example_state(b, k)
  if state:
    kwargs["example_state"] = {key: jnp.asarray(rows) for key, rows in state.items()}
  return kwargs


def timed_fn(loss, logits, labels, inner, **call_kwargs):
  import jax
  import jax.numpy as jnp

  def mean_loss(z):
    return jnp.mean(loss(z, labels, **call_kwargs))

  @jax.jit
  def run(z):
    def body(_, carry):
      z, total = carry
      value, grad = jax.value_and_grad(mean_loss)(z)
      return z - (1e-3 * grad).astype(z.dtype), total + value

    return jax.lax.fori_loop(0, inner, body, (z, jnp.zeros((), jnp.float32)))

  return lambda: _timing.block(run(logits))


def inner_iters(b, k, quick):
  return max(1, (2**18 if quick else 2**21) // (b * k))


def bench_losses(
  quick: bool, forms=("ids", "onehot"), only=None, repeats=None, baseline=None, shapes=None, baseline_first=False
):
  """{(B, K): {(name, form): seconds per iteration}}, with (REFERENCE, 'ids') and (REFERENCE_COPY, 'ids')
  in every case, and (name, form + BASELINE) for the losses the `baseline` module also has."""
  import jax
  import jax.numpy as jnp
  import optax

  import robust_losses

  names = robust_losses.names()
  if only:
    unknown = sorted(set(only) - set(names))
    if unknown:
      raise SystemExit(f"--only: unknown loss names {unknown}")
    names = [n for n in names if n in only]
  elif quick:  # the CI smoke run: the losses with targets (every loss's jit and grad are in tests/)
    names = [n for n in names if kind(n) != "other"]
  results = {}
  for b, k in shapes or (QUICK_SHAPES if quick else SHAPES):
    logits = jax.random.normal(jax.random.key(0), (b, k), jnp.float32)
    ids = jax.random.randint(jax.random.key(1), (b,), 0, k)
    labels = {"ids": ids, "onehot": jax.nn.one_hot(ids, k)}
    inner = inner_iters(b, k, quick)
    fns = {
      (REFERENCE, "ids"): timed_fn(optax.losses.softmax_cross_entropy_with_integer_labels, logits, ids, inner),
      # Same computation, compiled separately: a noise gauge.
      (REFERENCE_COPY, "ids"): timed_fn(
        lambda z, y: optax.losses.softmax_cross_entropy_with_integer_labels(z, y), logits, ids, inner
      ),
    }
    for n in names:
      loss = build(n, k)
      # A multi-view loss (GJS) gets M copies of the batch's logits: it does M views' work per example.
      z = logits if loss.num_views == 1 else jnp.stack([logits] * loss.num_views)
      for form in forms:
        copies = [(form, None)]
        if baseline is not None and n in baseline.names():
          # The same call arguments for the baseline (a library from before #19 accepts them as well).
          copies.insert(0 if baseline_first else 1, (form + BASELINE, baseline))
        for key, module in copies:
          loss = build(n, k, module)
          # A multi-view loss (GJS) gets M copies of the batch's logits: it does M views' work per example.
          z = logits if getattr(loss, "num_views", 1) == 1 else jnp.stack([logits] * loss.num_views)
          fns[(n, key)] = timed_fn(loss, z, labels[form], inner, **loop_kwargs(loss, b, k))
    secs = _timing.interleaved(fns, repeats=repeats or (3 if quick else 7), warmup=1)
    results[(b, k)] = {key: t / inner for key, t in secs.items()}
    print(f"  done {b}x{k}", file=sys.stderr, flush=True)
  return names, results


def bench_clipping(quick: bool):
  import jax
  import jax.numpy as jnp
  from jax.sharding import NamedSharding
  from jax.sharding import PartitionSpec as P

  import robust_losses
  from experiments.mesh import make_mesh

  mesh = make_mesh()
  rows = []
  for b, k in QUICK_SHAPES if quick else SHAPES[:2]:
    logits = jax.device_put(jax.random.normal(jax.random.key(0), (b, k)), NamedSharding(mesh, P("batch")))
    labels = jax.device_put(
      jax.nn.one_hot(jax.random.randint(jax.random.key(1), (b,), 0, k), k), NamedSharding(mesh, P("batch"))
    )
    inner = inner_iters(b, k, quick)
    fns = {}
    for stat in STATISTICS:
      loss = robust_losses.get("clipped_cross_entropy", statistic=stat, warmup_epochs=0)  # clips every step
      for axis in ("batch", None):

        def per_device(z, y, loss=loss, axis=axis):
          def body(_, carry):
            z, total = carry
            value, grad = jax.value_and_grad(lambda z: jnp.mean(loss(z, y, axis_name=axis)))(z)
            return z - 1e-3 * grad, total + jax.lax.pmean(value, "batch")

          return jax.lax.fori_loop(0, inner, body, (z, jnp.zeros((), jnp.float32)))

        f = jax.jit(
          jax.shard_map(per_device, mesh=mesh, in_specs=(P("batch"), P("batch")), out_specs=(P("batch"), P()))
        )
        fns[(stat, axis)] = lambda f=f: _timing.block(f(logits, labels))
    secs = _timing.interleaved(fns, repeats=3 if quick else 7, warmup=1)
    for stat in STATISTICS:
      g, l = secs[(stat, "batch")] / inner, secs[(stat, None)] / inner
      rows.append([f"{b}x{k}", stat, g * 1e6, l * 1e6, g / l])
  return rows


THRESHOLD_STATISTICS = ("mean", "quantile", "mad", "otsu", "gmm")
# Ops of a compiled module's entry computation that are not kernels: they move no data at run time.
_NOT_KERNELS = ("parameter", "constant", "tuple", "get-tuple-element", "bitcast")


def kernel_count(compiled) -> int:
  import re

  text = compiled.as_text()
  entry = text[text.index("ENTRY") :]
  ops = re.findall(r"= \S+ ([a-z][a-z0-9-]*)\(", entry)
  return sum(op not in _NOT_KERNELS for op in ops)


def bench_statistics(quick: bool):
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax

  import robust_losses

  sizes = (128,) if quick else (128, 1024, 4096)
  inner = 16 if quick else 256
  fns, kernels = {}, {}
  for b in sizes:
    rng = np.random.default_rng(0)
    noisy = b // 4  # a clean and a noisy mode, as after warm-up on noisy labels
    losses = jnp.asarray(
      np.concatenate([rng.lognormal(-3, 0.7, b - noisy), rng.lognormal(0.5, 0.5, noisy)]), jnp.float32
    )
    for stat in THRESHOLD_STATISTICS:

      def threshold(x, stat=stat):
        return robust_losses.batch_threshold(x, statistic=stat)

      @jax.jit
      def run(x, threshold=threshold):
        # x + 0 * tau: each call depends on the previous one, so XLA cannot hoist it out of the loop.
        return jax.lax.fori_loop(0, inner, lambda _, x: x + 0.0 * threshold(x), x)

      fns[(stat, b)] = lambda run=run, x=losses: _timing.block(run(x))
      kernels[(stat, b)] = kernel_count(jax.jit(threshold).lower(losses).compile())
  ce_shape = (128, 10) if quick else (1024, 100)
  logits = jax.random.normal(jax.random.key(0), ce_shape, jnp.float32)
  ids = jax.random.randint(jax.random.key(1), ce_shape[:1], 0, ce_shape[1])
  ce_inner = inner_iters(*ce_shape, quick)
  fns[REFERENCE] = timed_fn(optax.losses.softmax_cross_entropy_with_integer_labels, logits, ids, ce_inner)
  secs = _timing.interleaved(fns, repeats=3 if quick else 9, warmup=1)
  ce = secs.pop(REFERENCE) / ce_inner
  rows = [
    [stat, b, kernels[(stat, b)], secs[(stat, b)] / inner * 1e6, secs[(stat, b)] / inner / ce]
    for stat in THRESHOLD_STATISTICS
    for b in sizes
  ]
  return rows, ce_shape, ce


def main():
  p = _timing.parser(__doc__.splitlines()[0])
  p.add_argument("--devices", type=int, default=0, help="simulated CPU devices (set before jax starts)")
  p.add_argument("--clipping", action="store_true", help="only the dynamic-clipping section")
  p.add_argument("--statistics", action="store_true", help="only the clipping statistics, timed alone")
  p.add_argument(
    "--onehot-only", action="store_true", help="time one-hot labels only (for a library version without integer labels)"
  )
  p.add_argument("--only", default=None, help="comma-separated registered loss names to time (default: all)")
  p.add_argument("--repeats", type=int, default=None, help="interleaved rounds (default 7; 3 with --quick)")
  p.add_argument("--shapes", default=None, help="comma-separated BxK shapes to time, e.g. 1024x100 (default: all)")
  p.add_argument("--ids-only", action="store_true", help="time integer labels only")
  p.add_argument(
    "--baseline-first",
    action="store_true",
    help="time each loss's baseline copy just before this checkout's in every round (default: just after)",
  )
  p.add_argument(
    "--baseline",
    default=None,
    metavar="DIR",
    help="also time the losses of the robust_losses package in this checkout (same rounds)",
  )
  args = p.parse_args()
  if args.devices:
    _timing.set_host_devices(args.devices)
  info = _timing.machine()
  if args.clipping:
    rows = bench_clipping(args.quick)
    md = (
      f"Clipped CE (`clipped_cross_entropy`) inside `shard_map` over {info['devices']} simulated CPU "
      f"devices, global statistic (`axis_name='batch'`) vs per-device statistic (`axis_name=None`); "
      f"µs per value-and-grad iteration, median of interleaved repeats.\n\n"
      + _timing.table(["global batch B×K", "statistic", "global µs", "local µs", "global / local"], rows)
    )
    _timing.write_json(args.json, rows)
    _timing.report(args, "losses-clipping", md, info)
    return
  if args.statistics:
    rows, (b, k), ce = bench_statistics(args.quick)
    md = (
      f"`batch_threshold` alone (forward; default hyperparameters) on B losses from a clean and a noisy "
      f"log-normal mode, µs per call inside a jitted loop, median of interleaved repeats; XLA:CPU kernels "
      f"per call from the compiled module; last column: the time over optax integer-label CE's value and "
      f"gradient at {b}×{k} ({ce * 1e6:.0f} µs), timed in the same rounds.\n\n"
      + _timing.table(["statistic", "B", "kernels", "µs", f"× CE {b}×{k}"], rows)
    )
    _timing.write_json(args.json, rows)
    _timing.report(args, "losses-statistics", md, info)
    return
  p_forms = ("onehot",) if args.onehot_only else ("ids",) if args.ids_only else ("ids", "onehot")
  only = args.only.split(",") if args.only else None
  shapes = [tuple(int(d) for d in s.split("x")) for s in args.shapes.split(",")] if args.shapes else None
  baseline = load_baseline(args.baseline) if args.baseline else None
  names, results = bench_losses(args.quick, p_forms, only, args.repeats, baseline, shapes, args.baseline_first)
  cases = list(results)
  case = JSON_CASE if JSON_CASE in results else cases[0]
  form_name = {"ids": "int", "onehot": "one-hot"}
  form_name.update({f + BASELINE: form_name[f] + ", baseline" for f in p_forms})
  columns = [g for f in p_forms for g in ((f, f + BASELINE) if baseline is not None else (f,))]
  headers = (
    ["loss"]
    + [f"{b}×{k} {form_name[f]}" for b, k in cases for f in columns]
    + ["kind", f"target (int, {case[0]}×{case[1]})", "met"]
  )
  rows, ratios = [], {}
  for n in names:
    row = [n]
    for c in cases:
      ref = results[c][(REFERENCE, "ids")]
      row += [results[c][(n, f)] / ref if (n, f) in results[c] else "—" for f in columns]
    r = results[case][(n, p_forms[0])] / results[case][(REFERENCE, "ids")]
    ratios[n] = {
      f: results[case][(n, f)] / results[case][(REFERENCE, "ids")] for f in columns if (n, f) in results[case]
    }
    target = TARGETS.get(kind(n))
    if target is None:  # losses outside the lists of issues #9 and #19: measured, no target
      row += [kind(n), "—", "—"]
    else:
      row += [kind(n), f"≤ {target}×", "yes" if r <= target else "**no**"]
    rows.append(row)
  copy_row = (
    [REFERENCE_COPY]
    + [results[c][(REFERENCE_COPY, "ids")] / results[c][(REFERENCE, "ids")] for c in cases for _ in columns]
    + ["noise gauge", "1", ""]
  )
  ratios[REFERENCE_COPY] = {"ids": results[case][(REFERENCE_COPY, "ids")] / results[case][(REFERENCE, "ids")]}
  ref_row = (
    [f"{REFERENCE} µs/iter"] + [results[c][(REFERENCE, "ids")] * 1e6 for c in cases for _ in columns] + ["", "", ""]
  )
  md = (
    f"float32 value-and-grad time of each loss divided by that of `{REFERENCE}` "
    "(`optax.losses.softmax_cross_entropy_with_integer_labels`), same shape, same interleaved rounds "
    "(median of repeats), for integer labels and for one-hot labels. Second-last row: a separately "
    "compiled copy of the reference (the same computation; its distance from 1 is the run's noise). "
    "Last row: the reference's absolute time."
    + (
      f" Baseline columns: the library at `{args.baseline}`, timed in the same rounds." if baseline is not None else ""
    )
    + "\n\n"
    + _timing.table(headers, rows + [copy_row, ref_row])
  )
  _timing.write_json(args.json, ratios)
  _timing.report(args, "losses", md, info)


if __name__ == "__main__":
  main()
