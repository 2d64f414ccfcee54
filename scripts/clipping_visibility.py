#!/usr/bin/env python3
"""What makes pair-flip and asymmetric label noise visible to a clipping statistic (docs/RESULTS.md).

Trains a small MLP on sklearn's digits with the plain base loss (CE or one-vs-all BCE, no clipping) under a noise
model, records the per-example losses of every training step (the losses a clipping loss would see), and
replays that stream through each clipping statistic in four variants:

  batch        the statistic over the global mini-batch (Hurtik et al.'s mechanism, the library default);
  class        per labelled class within the batch (`per_class=True`; a class with < min_class_count losses
               in the batch gets the batch's pooled threshold);
  window       over a window of the last W losses (`window=loss_window_init(W)`, this batch included);
  class-window per labelled class over a window of the last W_c losses of each class.

For each epoch listed, the examples the statistic clips (loss above its threshold) are compared with the labels
the noise model flipped: precision (share of the clipped that are flipped), recall (share of the flipped that
are clipped) and the clipped share. The statistics run through the library's own functions
(`robust_losses.dynamic_clipping`), replayed with `lax.scan` over the recorded steps.

Setup as configs/digits.py: MLP 256-256, SGD (Nesterov momentum 0.9), lr 0.05 with cosine decay, weight decay
5e-4, batch 64, 40 epochs; noise from experiments/noise.py.

Usage:
  python scripts/clipping_visibility.py [--seeds 3] [--bases bce ce] [--epochs 5 10 20 40] [--out FILE.json]
"""

import argparse
import functools
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import sklearn.datasets
import sklearn.model_selection

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import robust_losses as rl  # noqa: E402
from experiments import noise  # noqa: E402

NOISES = (("symmetric", 0.0), ("symmetric", 0.3), ("symmetric", 0.6), ("pairflip", 0.4), ("asymmetric", 0.4))
STATISTICS = {
  "gmm sep3": {"statistic": "gmm", "num_std": 3.0},
  "gmm sep4": {"statistic": "gmm", "num_std": 4.0},
  "mad k=3": {"statistic": "mad", "num_std": 3.0},
  "otsu": {"statistic": "otsu"},
  "q0.9": {"statistic": "quantile", "quantile": 0.9},
}
K = 10
BATCH = 64
EPOCHS = 40


def load_digits():
  """The trainer's digits split (experiments/data/datasets.py): stratified 70/30, random_state 0, 1257 train."""
  digits = sklearn.datasets.load_digits()
  x_train, _, y_train, _ = sklearn.model_selection.train_test_split(
    digits.images.reshape(len(digits.images), -1) / 16.0,
    digits.target.astype(np.int32),
    test_size=0.3,
    stratify=digits.target,
    random_state=0,
  )
  x_train = (x_train - x_train.mean()) / x_train.std()
  return x_train.astype(np.float32), y_train


def init_mlp(key, sizes=(64, 256, 256, K)):
  params = []
  for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
    w = jax.random.normal(jax.random.fold_in(key, i), (n_in, n_out)) * np.sqrt(2.0 / n_in)
    params.append((w, jnp.zeros(n_out)))
  return params


def mlp(params, x):
  for w, b in params[:-1]:
    x = jax.nn.relu(x @ w + b)
  w, b = params[-1]
  return x @ w + b


def train_stream(x, labels, base, seed):
  """Trains with the plain base loss; returns per step (indices [S, B], losses [S, B], valid [S, B])."""
  n = len(x)
  steps_per_epoch = -(-n // BATCH)
  schedule = optax.cosine_decay_schedule(0.05, EPOCHS * steps_per_epoch)
  tx = optax.chain(optax.add_decayed_weights(5e-4), optax.sgd(schedule, momentum=0.9, nesterov=True))
  loss_fn = rl.sigmoid_binary_cross_entropy if base == "bce" else rl.softmax_cross_entropy
  rng = np.random.default_rng(seed)
  # One permutation per epoch; the last batch of an epoch is partial, padded and masked.
  order = np.zeros((EPOCHS, steps_per_epoch * BATCH), np.int32)
  order[:, :n] = np.stack([rng.permutation(n) for _ in range(EPOCHS)])
  valid = np.broadcast_to(np.arange(steps_per_epoch * BATCH) < n, order.shape)
  order, valid = order.reshape(-1, BATCH), valid.reshape(-1, BATCH)

  @jax.jit
  def run(params, opt_state, batches, masks):
    def step(carry, inputs):
      params, opt_state = carry
      idx, mask = inputs
      xb, yb = jnp.asarray(x)[idx], jnp.asarray(labels)[idx]

      def objective(p):
        losses = loss_fn(mlp(p, xb), yb, where=mask)
        return losses.sum() / jnp.maximum(mask.sum(), 1), losses

      (_, losses), grads = jax.value_and_grad(objective, has_aux=True)(params)
      updates, opt_state = tx.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), losses

    return jax.lax.scan(step, (params, opt_state), (batches, masks))[1]

  params = init_mlp(jax.random.key(seed))
  losses = run(params, tx.init(params), jnp.asarray(order), jnp.asarray(valid))
  return order, np.asarray(losses), valid, steps_per_epoch


def _auc(scores, positive):
  """P(score of a positive > score of a negative), ties counted half (Mann-Whitney U / (n+ n-))."""
  n_pos, n_neg = positive.sum(), (~positive).sum()
  if n_pos == 0 or n_neg == 0:
    return float("nan"), 0
  order = np.argsort(scores, kind="stable")
  ranks = np.empty(len(scores))
  ranks[order] = np.arange(1, len(scores) + 1)
  for value in np.unique(scores[np.diff(np.sort(scores), prepend=np.nan) == 0]):  # average ranks of ties
    tied = scores == value
    ranks[tied] = ranks[tied].mean()
  return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)), int(n_pos * n_neg)


def _best_f1(scores, positive):
  """The best F1 over all cuts "clip the scores above c" (an oracle threshold)."""
  order = np.argsort(-scores, kind="stable")
  hits = np.cumsum(positive[order])
  clipped = np.arange(1, len(scores) + 1)
  return float(np.max(2 * hits / (clipped + positive.sum()))) if positive.any() else float("nan")


def separability(losses, flipped, ids):
  """How far the losses of one epoch separate flipped from clean labels, pooled and within each labelled class."""
  pooled_auc, _ = _auc(losses, flipped)
  within = [_auc(losses[ids == c], flipped[ids == c]) for c in range(K)]
  pairs = sum(n for _, n in within)
  within_auc = sum(a * n for a, n in within if n) / pairs if pairs else float("nan")
  # Per-class percentile of each loss: one cut of it is a per-class quantile threshold.
  percentile = np.zeros(len(losses))
  for c in range(K):
    members = ids == c
    if members.any():
      percentile[members] = np.argsort(np.argsort(losses[members], kind="stable"), kind="stable") / members.sum()
  return {
    "auc_pooled": pooled_auc,
    "auc_within_class": within_auc,
    "best_f1_pooled_threshold": _best_f1(losses, flipped),
    "best_f1_class_quantile": _best_f1(percentile, flipped),
  }


@functools.lru_cache(maxsize=None)
def replayer(variant, statistic, window_size, class_window_size, min_class_count):
  """A jitted scan over the recorded steps: the clipped mask [S, B] of one statistic variant."""
  kwargs = dict(STATISTICS[statistic])
  if variant in ("class", "class-window"):
    kwargs.update(per_class=True, min_class_count=min_class_count)
  window = {
    "window": lambda: rl.loss_window_init(window_size),
    "class-window": lambda: rl.loss_window_init(class_window_size, num_classes=K),
  }.get(variant, lambda: None)()

  def step(window, inputs):
    l, y, w = inputs
    out = rl.dynamic_clipping(l, labels=y, num_classes=K, where=w, window=window, return_threshold=True, **kwargs)
    tau = out[1]
    threshold = tau[jnp.clip(y, 0, K - 1)] if tau.ndim else tau
    return (out[2] if window is not None else window), (l > threshold) & w

  return jax.jit(lambda *xs: jax.lax.scan(step, window, xs)[1])


def main():
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--seeds", type=int, default=3)
  ap.add_argument("--bases", nargs="+", default=["bce", "ce"])
  ap.add_argument("--epochs", nargs="+", type=int, default=[5, 10, 20, 40], help="1-based epochs to evaluate")
  ap.add_argument("--window", type=int, default=1024, help="pooled window W (16 batches of 64)")
  ap.add_argument("--class-window", type=int, default=128, help="per-class window W_c (x 10 classes)")
  ap.add_argument("--min-class-count", type=int, default=8)
  ap.add_argument("--out", default="", help="also write the numbers as JSON")
  a = ap.parse_args()
  x, clean = load_digits()
  variants = ("batch", "class", "window", "class-window")
  results, separation = [], []
  start = time.time()
  for base in a.bases:
    for kind, rate in NOISES:
      for seed in range(a.seeds):
        noisy = noise.apply_noise(clean, kind=kind, rate=rate, num_classes=K, seed=seed, dataset="digits")
        order, losses, valid, steps_per_epoch = train_stream(x, noisy.labels, base, seed)
        ids = noisy.labels[order]
        flipped = noisy.is_noisy[order] & valid
        for epoch in a.epochs:
          rows = slice((epoch - 1) * steps_per_epoch, epoch * steps_per_epoch)
          v = valid[rows]
          separation.append(
            {
              "base": base,
              "noise": f"{kind} {rate:g}",
              "seed": seed,
              "epoch": epoch,
              **separability(losses[rows][v], flipped[rows][v], ids[rows][v]),
            }
          )
        for name in STATISTICS:
          for variant in variants:
            replay = replayer(variant, name, a.window, a.class_window, a.min_class_count)
            clipped = np.asarray(replay(losses, ids, valid))
            for epoch in a.epochs:
              rows = slice((epoch - 1) * steps_per_epoch, epoch * steps_per_epoch)
              c, f, v = clipped[rows], flipped[rows], valid[rows]
              results.append(
                {
                  "base": base,
                  "noise": f"{kind} {rate:g}",
                  "seed": seed,
                  "statistic": name,
                  "variant": variant,
                  "epoch": epoch,
                  "clipped": float(c.sum() / v.sum()),
                  "flipped": float(f.sum() / v.sum()),
                  "precision": float((c & f).sum() / c.sum()) if c.sum() else float("nan"),
                  "recall": float((c & f).sum() / f.sum()) if f.sum() else float("nan"),
                }
              )
        print(f"[{time.time() - start:6.0f}s] {base} {kind} {rate:g} seed {seed}", file=sys.stderr, flush=True)
  if a.out:
    with open(a.out, "w") as f:
      json.dump({"args": vars(a), "results": results, "separation": separation}, f, indent=1)
  report(results, separation, a)


def _mean(rows, key):
  values = np.array([r[key] for r in rows], float)
  values = values[np.isfinite(values)]
  return float(values.mean()) if values.size else float("nan")


def _f1(p, r):
  return 0.0 if not (p > 0 and r > 0) else 2 * p * r / (p + r)


def report(results, separation, a):
  """Markdown: separability per base and noise; per base and noise, clipped % / precision / recall per epoch (mean
  over seeds); then F1."""
  fmt = lambda v: "–" if not np.isfinite(v) else f"{100 * v:.0f}"
  noises = [f"{k} {r:g}" for k, r in NOISES]
  keys = ("auc_pooled", "auc_within_class", "best_f1_pooled_threshold", "best_f1_class_quantile")
  print(
    "Separability of flipped from clean labels by the loss, over each epoch's training losses (mean over seeds): "
    "AUC pooled / AUC within the labelled class; best F1 of one pooled threshold / of one per-class quantile level "
    "(oracle cuts)\n"
  )
  print("| base | noise | " + " | ".join(f"epoch {e}" for e in a.epochs) + " |")
  print("|---|---|" + "---|" * len(a.epochs))
  for base in a.bases:
    for noise_name in noises[1:] if noises[0] == "symmetric 0" else noises:
      cells = []
      for epoch in a.epochs:
        sel = [r for r in separation if (r["base"], r["noise"], r["epoch"]) == (base, noise_name, epoch)]
        auc = " / ".join(f"{_mean(sel, k):.2f}" for k in keys[:2])
        f1 = " / ".join(f"{_mean(sel, k):.2f}" for k in keys[2:])
        cells.append(f"{auc}; {f1}")
      print(f"| {base} | {noise_name} | " + " | ".join(cells) + " |")
  for base in a.bases:
    for noise_name in noises:
      rows = [r for r in results if r["base"] == base and r["noise"] == noise_name]
      flipped = _mean(rows, "flipped")
      print(
        f"\n{base.upper()}, {noise_name} ({100 * flipped:.0f} % of batch labels flipped): clipped % / precision / "
        "recall per epoch, mean over seeds\n"
      )
      print("| statistic | variant | " + " | ".join(f"epoch {e}" for e in a.epochs) + " |")
      print("|---|---|" + "---|" * len(a.epochs))
      for name in STATISTICS:
        for variant in ("batch", "class", "window", "class-window"):
          cells = []
          for epoch in a.epochs:
            sel = [r for r in rows if r["statistic"] == name and r["variant"] == variant and r["epoch"] == epoch]
            cells.append(" / ".join(fmt(_mean(sel, k)) for k in ("clipped", "precision", "recall")))
          print(f"| {name} | {variant} | " + " | ".join(cells) + " |")
  print(
    "\nClean labels: % of batch examples clipped; noisy labels: F1 of the clipped set as a detector of flipped "
    "labels (mean over seeds and the listed epochs)\n"
  )
  print(
    "| base | statistic | variant | "
    + " | ".join("clean: clipped %" if n == "symmetric 0" else n for n in noises)
    + " |"
  )
  print("|---|---|---|" + "---|" * len(noises))
  for base in a.bases:
    for name in STATISTICS:
      for variant in ("batch", "class", "window", "class-window"):
        cells = []
        for noise_name in noises:
          sel = [
            r
            for r in results
            if (r["base"], r["noise"], r["statistic"], r["variant"]) == (base, noise_name, name, variant)
          ]
          if noise_name == "symmetric 0":
            cells.append(f"{100 * _mean(sel, 'clipped'):.0f}")
            continue
          f1 = [_f1(r["precision"], r["recall"]) for r in sel]
          cells.append(f"{np.mean(f1):.2f}")
        print(f"| {base} | {name} | {variant} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
  main()
