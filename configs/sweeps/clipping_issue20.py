"""Issue 20's ablation: dynamic clipping (the library defaults with their 5-epoch warm-up), OGC with its official
schedule, and the baselines it must beat, on the digits grid the defaults were tuned on and on a confirmation
protocol they were not tuned on (Adam, batch 32, 30 epochs, noise kinds and rates outside the grid), 2 seeds, with
the MLP or (`confirm_cnn`) the small CNN.

  python -m experiments.sweep --config=configs/sweeps/clipping_issue20.py --workdir=runs/clipping_issue20
  python -m experiments.sweep --config=configs/sweeps/clipping_issue20.py:confirm \\
    --workdir=runs/clipping_issue20_confirm
  python -m experiments.sweep --config=configs/sweeps/clipping_issue20.py:confirm_cnn \\
    --workdir=runs/clipping_issue20_confirm_cnn

Every run also writes its label audit (suspected_label_errors/, label_audit_* in summary.json).
"""

from configs import digits
from configs.sweeps import _grid as g

BCE, CE = "binary_cross_entropy_dynamic_clipping", "clipped_cross_entropy"


def rows() -> list[dict]:
  return [
    g.loss("BCE", "sigmoid_binary_cross_entropy"),
    g.loss("BCE + dyn. clip default wu5", BCE, warmup_epochs=5),
    g.loss("CE", "softmax_cross_entropy"),
    g.loss("clipped CE default wu5", CE, warmup_epochs=5),
    g.loss("CE + grad clip 1", "softmax_cross_entropy", overrides={"grad_clip_norm": 1.0}),
    g.loss("PHuber-CE tau=2", "partially_huberised_cross_entropy", tau=2.0),
    # The official protocol: queue 4096, refit every 32 steps, epsilon 20, global gradient norm clipped at 5.
    g.loss("OGC-CE official", "optimized_gradient_clipping", overrides={"grad_clip_norm": 5.0}),
    g.loss("oracle small-loss CE wu5", "oracle_small_loss_selection", base="ce", warmup_epochs=5),
  ]


def get_config(protocol: str = "grid"):
  base = digits.get_config()
  if protocol == "grid":  # the digits grid: SGD lr 0.05, batch 64, 40 epochs
    noises = g.noise("symmetric", 0.0, 0.3, 0.6) + g.noise("pairflip", 0.4)
  elif protocol in ("confirm", "confirm_cnn"):  # confirm_cnn: the same with a convolutional model
    base.model = "small_cnn" if protocol == "confirm_cnn" else base.model
    base.optimizer = "adam"
    base.learning_rate = 1e-3
    base.weight_decay = 0.0
    base.batch_size = 32
    base.num_epochs = 30
    noises = g.noise("symmetric", 0.0, 0.45) + g.noise("pairflip", 0.3) + g.noise("asymmetric", 0.3)
  else:
    raise ValueError(f"protocol={protocol!r} is unknown; valid choices: 'grid', 'confirm', 'confirm_cnn'")
  return g.sweep(base, rows(), noises, num_seeds=2)
