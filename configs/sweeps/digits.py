"""The README's main job: which loss helps at which noise, on the embedded digits data (no download).

14 losses × (symmetric η ∈ {0, .2, .4, .6, .8}, asymmetric η ∈ {.2, .4}) × 3 seeds, vmapped per cell; about
9 minutes on 2 CPU cores. `digits_full.py` has every row (36 losses, docs/RESULTS.md).
Each run holds out 10 % of the training set with its noisy labels (val_fraction) and reports the epoch they
select (summary.json `selected_epoch`, `test_accuracy_selected`) beside the last and the best-test epochs.
  python -m experiments.sweep --config=configs/sweeps/digits.py --workdir=runs/sweep_digits
"""

from configs import digits
from configs.sweeps import _grid as g

QUICK = (
  "CE",
  "BCE",
  "BCE + dyn. clip (gmm wu5)",
  "TCE α=1.5",
  "TCE α=2",
  "GCE q=0.7",
  "truncated Lq",
  "SCE",
  "NCE+RCE",
  "ANL-CE",
  "NCE+AGCE",
  "JAL-CE",
  "CE_ε+MAE",
  "ELR",
)


def all_rows():
  return [
    g.loss("CE", "softmax_cross_entropy"),
    g.loss("BCE", "sigmoid_binary_cross_entropy"),
    *g.dynamic_clipping_rows(),
    *[g.loss(f"TCE α={a:g}", "tamed_cross_entropy", alpha=a) for a in (0.5, 1.0, 1.5, 2.0)],
    # 40 epochs: truncated Lq prunes from epoch 10, every 5 (the reference's 40/10 scaled to the run).
    *g.robust_baselines(prune_start_epoch=10, prune_every_epochs=5),
    *g.frontier_rows(),
    *g.more_frontier_rows(),
  ]


NOISES = g.noise("symmetric", 0.0, 0.2, 0.4, 0.6, 0.8) + g.noise("asymmetric", 0.2, 0.4)


def base():
  c = digits.get_config()
  c.val_fraction = 0.1  # noisy validation: each replica's epoch is selected without clean labels
  return c


def get_config():
  rows = [r for r in all_rows() if r["label"] in QUICK]
  assert len(rows) == len(QUICK)
  return g.sweep(base(), rows, NOISES, num_seeds=3)
