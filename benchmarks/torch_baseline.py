"""PyTorch reference side of the benchmarks: CIFAR ResNet-20 and the digits MLP, written the usual way.

This is what the JAX code is compared against, so it is meant to be a good PyTorch program, not a straw
man: data preloaded as tensors (no DataLoader worker overhead), `set_to_none` gradients, the whole epoch's
permutation drawn once, no host syncs inside the step loop except where the metric needs them.

  python -m benchmarks.torch_baseline digits --loss gce --noise symmetric:0.4 --seed 0 --epochs 40
      one (cell, seed) run of the digits sweep, the way PyTorch noisy-label repositories run a grid:
      one process per run; prints a JSON line {"test_accuracy": ..., "seconds": ...}.

Only torch, numpy, scikit-learn and the pure-NumPy experiments.noise are imported (no JAX), so the
per-process start-up cost is PyTorch's own.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


# ------------------------------------------------------------------------------------------- models
class BasicBlockA(nn.Module):
  """CIFAR basic block with the parameter-free option-A shortcut (He et al. 2016, Sec. 4.2)."""

  def __init__(self, cin, cout, stride):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(cout)
    self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(cout)
    self.stride, self.extra = stride, cout - cin

  def forward(self, x):
    y = F.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    r = x[:, :, :: self.stride, :: self.stride]
    if self.extra:
      r = F.pad(r, (0, 0, 0, 0, 0, self.extra))  # zero channels at the end, as models.CifarBasicBlock
    return F.relu(y + r)


class ResNet20(nn.Module):
  def __init__(self, num_classes=10, n=3):
    super().__init__()
    self.conv = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
    self.bn = nn.BatchNorm2d(16)
    layers, cin = [], 16
    for stage, cout in enumerate((16, 32, 64)):
      for block in range(n):
        layers.append(BasicBlockA(cin, cout, 2 if stage > 0 and block == 0 else 1))
        cin = cout
    self.layers = nn.Sequential(*layers)
    self.fc = nn.Linear(64, num_classes)
    for m in self.modules():
      if isinstance(m, nn.Conv2d):
        nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

  def forward(self, x):
    x = self.layers(F.relu(self.bn(self.conv(x))))
    return self.fc(x.mean((2, 3)))


def mlp(in_features, num_classes, hidden=(256, 256)):
  layers, width = [], in_features
  for h in hidden:
    layers += [nn.Linear(width, h), nn.ReLU()]
    width = h
  return nn.Sequential(nn.Flatten(), *layers, nn.Linear(width, num_classes))


def resnet20_step_fn(batch_size, channels_last=False):
  """(model, step) for one SGD step of ResNet-20 on a fixed random batch: forward, CE, backward, update."""
  model = ResNet20()
  opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
  g = torch.Generator().manual_seed(0)
  x = torch.randn(batch_size, 3, 32, 32, generator=g)
  y = torch.randint(0, 10, (batch_size,), generator=g)
  if channels_last:
    model, x = model.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)
  model.train()

  def step():
    opt.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    return loss

  return model, step


# ------------------------------------------------------------------------------------------- losses
def loss_fn(name):
  """Per-example losses of the robust baselines, with the sweep's hyperparameters."""

  def probs_y(logits, y):
    return F.softmax(logits, -1).gather(1, y[:, None])[:, 0]

  if name == "ce":
    return lambda logits, y: F.cross_entropy(logits, y, reduction="none")
  if name == "gce":  # q = 0.7
    return lambda logits, y: (1 - probs_y(logits, y).clamp_min(1e-7) ** 0.7) / 0.7
  if name == "mae":
    return lambda logits, y: 2 - 2 * probs_y(logits, y)
  if name == "sce":  # alpha = 0.1, beta = 1, A = -4: RCE = -A (1 - p_y)
    return lambda logits, y: 0.1 * F.cross_entropy(logits, y, reduction="none") + 4 * (1 - probs_y(logits, y))
  raise ValueError(f"unknown loss {name!r}; valid: ce, gce, mae, sce")


# ------------------------------------------------------------------------------------------- digits
def load_digits():
  """The project's digits split (experiments.data.arrays.load_digits), without importing JAX."""
  import sklearn.datasets
  import sklearn.model_selection

  d = sklearn.datasets.load_digits()
  images = np.round(d.images * (255 / 16)).astype(np.uint8)[..., None]
  return sklearn.model_selection.train_test_split(
    images, d.target.astype(np.int32), test_size=0.3, stratify=d.target, random_state=0
  )


class DigitsRun:
  """One run of configs/digits.py's recipe: MLP 256-256, SGD Nesterov + coupled L2, cosine per step."""

  def __init__(
    self, loss, noise_kind, noise_rate, seed, epochs, batch_size=64, lr=0.05, momentum=0.9, weight_decay=5e-4
  ):
    from experiments import noise  # pure NumPy

    torch.manual_seed(seed)
    x_train, x_test, y_train, y_test = load_digits()
    noisy = noise.apply_noise(y_train, kind=noise_kind, rate=noise_rate, num_classes=10, seed=seed, dataset="digits")
    mean, std = x_train.mean() / 255, x_train.std() / 255
    to_x = lambda a: torch.from_numpy(((a / 255.0 - mean) / std).astype(np.float32))
    self.xtr, self.xte = to_x(x_train), to_x(x_test)
    self.ytr, self.yte = torch.from_numpy(noisy.labels.astype(np.int64)), torch.from_numpy(y_test.astype(np.int64))
    self.clean, self.is_noisy = torch.from_numpy(y_train.astype(np.int64)), torch.from_numpy(noisy.is_noisy)
    self.model = mlp(self.xtr[0].numel(), 10)
    self.opt = torch.optim.SGD(
      self.model.parameters(), lr=lr, momentum=momentum, nesterov=True, weight_decay=weight_decay
    )
    self.batch_size, self.steps_per_epoch = batch_size, len(self.ytr) // batch_size
    total = epochs * self.steps_per_epoch
    self.sched = torch.optim.lr_scheduler.LambdaLR(
      self.opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total))
    )
    self.criterion = loss_fn(loss)

  def train_epoch(self) -> float:
    self.model.train()
    perm = torch.randperm(len(self.ytr))
    total = torch.zeros(())
    for i in range(self.steps_per_epoch):
      idx = perm[i * self.batch_size : (i + 1) * self.batch_size]
      self.opt.zero_grad(set_to_none=True)
      loss = self.criterion(self.model(self.xtr[idx]), self.ytr[idx]).mean()
      loss.backward()
      self.opt.step()
      self.sched.step()
      total += loss.detach()
    return total.item() / self.steps_per_epoch

  @torch.no_grad()
  def evaluate(self) -> dict:
    """The per-epoch metrics the JAX runs log: test accuracy and memorisation of the noisy labels."""
    self.model.eval()
    pred = self.model(self.xtr).argmax(1)
    noisy = self.is_noisy
    return {
      "test_accuracy": (self.model(self.xte).argmax(1) == self.yte).float().mean().item(),
      "memorised": ((pred == self.ytr) & noisy).sum().item() / max(int(noisy.sum()), 1),
      "clean_accuracy": ((pred == self.clean) & ~noisy).sum().item() / max(int((~noisy).sum()), 1),
    }


def run_digits(loss, noise_kind, noise_rate, seed, epochs, threads=2):
  t0 = time.perf_counter()
  torch.set_num_threads(threads)
  run = DigitsRun(loss, noise_kind, noise_rate, seed, epochs)
  history = []
  for epoch in range(epochs):
    history.append({"epoch": epoch + 1, "train_loss": run.train_epoch(), **run.evaluate()})
  return {
    "test_accuracy": history[-1]["test_accuracy"],
    "seconds": time.perf_counter() - t0,
    "epochs": epochs,
    "history": history,
  }


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("task", choices=["digits"])
  p.add_argument("--loss", default="ce")
  p.add_argument("--noise", default="symmetric:0.4", help="kind:rate")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--epochs", type=int, default=40)
  p.add_argument("--threads", type=int, default=2)
  args = p.parse_args()
  kind, rate = args.noise.split(":")
  out = run_digits(args.loss, kind, float(rate), args.seed, args.epochs, threads=args.threads)
  out.pop("history")
  print(json.dumps(out))


if __name__ == "__main__":
  main()
