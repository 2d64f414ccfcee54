#!/usr/bin/env python3
"""Re-derives every fixture in tests/fixtures/official/ from the formulas written in its README.md.

This is an independent check, written from the README and not from the official code. It confirms that
the documented formulas, clamps, detached factors and float32 constants reproduce the official PyTorch
numbers (values, per-example values and gradients) to about 1e-15 relative error in float64. It needs
torch, for example:
  /tmp/torchenv/bin/python scripts/check_official_fixture_formulas.py
The library's own tests do not need torch.
"""

import glob
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

D = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "official")
F64 = torch.float64


def f32(x):
  """The float32 rounding of x, as a Python float."""
  return float(np.float32(x))


# Constants the official code computes in float32 (see README.md).
A_1E7 = float(-torch.tensor(1e-7).log())  # -log(float32(1e-7)), computed in float32
A_1E8 = float(-torch.tensor(1e-8).log())
LOG_1E4 = float(torch.tensor(1e-4).log())  # log of the float32-clamped one-hot, in float32


def onehot(y, k):
  return F.one_hot(y, k).to(F64)


def take(x, y):
  return x.gather(1, y[:, None])[:, 0]


def p_y(z, y):
  return take(F.softmax(z, 1), y)


def ce(z, y):
  return -take(F.log_softmax(z, 1), y)


def nce(z, y):
  lp = F.log_softmax(z, 1)
  return -take(lp, y) / (-lp.sum(1))


def nnce(z, y, min_prob, a, pmax=1.0):
  q = a + F.softmax(z, 1).clamp(min_prob, pmax).log()
  return 1 - take(q, y) / q.sum(1)


def nfl(z, y, gamma, scale=1.0):
  lp = F.log_softmax(z, 1)
  norm = (-((1 - lp.detach().exp()) ** gamma) * lp).sum(1)  # prefactor detached, lp not
  lpy = take(lp, y)
  return scale * (-((1 - lpy.detach().exp()) ** gamma) * lpy) / norm


def nnfl(z, y, gamma, min_prob):
  logmp = torch.tensor(min_prob).log()  # float32
  a_t = -((1 - min_prob) ** gamma) * logmp  # float32 tensor
  k = z.shape[1]
  lp = F.log_softmax(z, 1).clamp(min=float(logmp))
  norm = (-((1 - lp.detach().exp()) ** gamma) * lp).sum(1)
  lpy = take(lp, y)
  fl = -((1 - lpy.detach().exp()) ** gamma) * lpy
  return 1 - (float(a_t) - fl) / (float(k * a_t) - norm)  # K*A is rounded to float32


def rce(z, y):
  p = F.softmax(z, 1).clamp(1e-7, 1)
  return -LOG_1E4 * (p * (1 - onehot(y, z.shape[1]))).sum(1)


def amse(z, y, a):
  return ((F.softmax(z, 1) - a * onehot(y, z.shape[1])) ** 2).mean(1)


def ldr(z, y, threshold, lam):
  s = F.softplus(z)
  s = s / s.mean(1, keepdim=True)
  yy = onehot(y, z.shape[1])
  d = (f32(threshold) * (1 - yy) + s - (s * yy).sum(1, keepdim=True)) / lam  # threshold*(1-y) in float32
  m = d.max(1, keepdim=True).values.detach()
  return lam * (torch.log(torch.exp(d - m).mean(1)) + m[:, 0])


def js(zs, y, weights):
  k = zs[0].shape[1]
  yy = onehot(y, k)
  ds = [yy] + [F.softmax(z, 1) for z in zs]
  m = f32(weights[0]) * yy + sum(w * d for w, d in zip(weights[1:], ds[1:]))  # pi1*onehot in float32
  lm = m.clamp(1e-7, 1).log()

  def kl(d):
    return torch.where(d > 0, d * (d.clamp(min=1e-7).log() - lm), torch.zeros_like(d)).sum(1)

  scale = -1 / ((1 - weights[0]) * np.log(1 - weights[0]))
  return scale * sum(w * kl(d) for w, d in zip(weights, ds))


def per_example(name, hp, z, y):
  k = z.shape[1]
  if name == "anl_nnce":
    return nnce(z, y, 1e-7, A_1E7)
  if name == "anl_nnfl":
    return nnfl(z, y, 0.5, 1e-7)
  if name == "anl_ce":
    return hp["alpha"] * nce(z, y) + hp["beta"] * nnce(z, y, 1e-7, A_1E7)
  if name == "anl_fl":
    return hp["alpha"] * nfl(z, y, hp["gamma"]) + hp["beta"] * nnfl(z, y, hp["gamma"], 1e-7)
  if name in ("alfs_agce", "alfs_nce_agce"):
    a, q = hp["a"], hp["q"]
    base = ((a + 1) ** q - (a + p_y(z, y)) ** q) / q
  elif name in ("alfs_aul", "alfs_nce_aul"):
    a, q = hp["a"], hp["q"]
    base = ((a - p_y(z, y)) ** q - (a - 1) ** q) / q
  elif name in ("alfs_ael", "alfs_nce_ael"):
    base = torch.exp(-p_y(z, y) / hp["a"])
  else:
    base = None
  if base is not None:
    return base if "nce" not in name else hp["alpha"] * nce(z, y) + hp["beta"] * base
  if name == "alfs_anorm":
    p = F.softmax(z, 1).clamp(1e-5, 1)
    a, pp = hp["a"], hp["p"]
    return (((a * onehot(y, k) - p).abs() ** pp).sum(1) - (a - 1) ** pp) / pp
  if name == "jal_amse":
    return hp["scale"] * amse(z, y, hp["a"])
  if name == "jal_nce_amse":
    return hp["alpha"] * nce(z, y) + hp["beta"] * amse(z, y, hp["a"])
  if name == "jal_nfl_amse":
    return hp["alpha"] * nfl(z, y, hp["gamma"]) + hp["beta"] * amse(z, y, hp["a"])
  if name == "jal_nce_nnce":
    return hp["alpha"] * nce(z, y) + hp["beta"] * nnce(z, y, 1e-8, A_1E8)
  if name in ("jal_ldr", "ldr_kl"):
    return ldr(z, y, hp["threshold"], hp["Lambda"])
  if name == "jal_ce_lc":
    delta = hp["delta"]
    n = z.norm(dim=1, keepdim=True) + 1e-8
    zz = torch.where(n > 1 / delta, z / n * delta, z)
    return -take(F.softmax(zz, 1).clamp(min=1e-8).log(), y)
  if name == "logitclip":
    t = hp["temp"]
    n = z.norm(dim=1, keepdim=True) + 1e-7
    return ce(torch.where(n > t, z / n / t, z), y)
  if name in ("eps_ece", "eps_ece_mae"):
    m = hp["m"]
    p = F.softmax(z, 1)
    q = ((p + m * F.one_hot(p.argmax(1), k)) / (m + 1)).clamp(min=1e-8)
    e = -take(q.log(), y)
    return e if name == "eps_ece" else hp["alpha"] * e + hp["beta"] * 2 * (1 - p_y(z, y))
  if name == "gjs_js":
    return js([z], y, [float(v) for v in hp["js_weights"].split()])
  if name == "taylor_ce":
    e = 1 - p_y(z, y)
    return e if hp["t"] == 1 else e + e * e / 2
  if name == "nls_gls":
    r = hp["smooth_rate"]
    lp = F.log_softmax(z, 1)
    return (1 - r) * (-take(lp, y)) + r * (-lp.mean(1))
  if name == "apl_fl":
    lpy = take(F.log_softmax(z, 1), y)
    return -((1 - lpy.detach().exp()) ** hp["gamma"]) * lpy
  if name == "apl_nfl":
    return nfl(z, y, hp["gamma"], hp["scale"])
  if name == "apl_nce_rce":
    return hp["alpha"] * nce(z, y) + hp["beta"] * rce(z, y)
  if name == "apl_sce":
    return hp["alpha"] * ce(z, y) + hp["beta"] * rce(z, y)
  if name == "apl_nfl_rce":
    return hp["alpha"] * nfl(z, y, hp["gamma"]) + hp["beta"] * rce(z, y)
  if name == "phuber_ce":
    t, p = hp["tau"], p_y(z, y)
    return torch.where(p <= 1 / t, -t * p + math.log(t) + 1, -torch.log(p))
  if name == "phuber_gce":
    t, q, p = hp["tau"], hp["q"], p_y(z, y)
    th = t ** (1 / (q - 1))
    return torch.where(p <= th, -t * p + t * th + (1 - th**q) / q, (1 - p**q) / q)
  if name in ("ogc_ce", "ogc_fl", "ogc_gce"):
    base, t = name[4:], hp["threshold"]
    p = take(F.softmax(z, 1).clamp(1e-7, 1 - 1e-7), y)
    t32 = torch.tensor(t)  # float32: tau and L(t) are float32 in the official code
    tau = ogc_grad(t32, base, hp).abs().item()
    return torch.where(p <= t, 1 - tau * p + ogc_loss(t32, base, hp), ogc_loss(p, base, hp))
  if name == "sr":
    u = z / z.norm(dim=1, keepdim=True).clamp(min=1e-12) / hp["tau"]
    reg = (F.softmax(u, 1).clamp(1e-7, 1) ** hp["p"]).sum(1)
    if hp["loss"] == "CE":
      base = ce(u, y)
    elif hp["loss"] == "GCE":
      base = (1 - take(F.softmax(u, 1).clamp(1e-7, 1), y) ** hp["gce_q"]) / hp["gce_q"]
    else:  # FL, gamma 0.5, pt detached
      lpy = take(F.log_softmax(u, 1), y)
      base = -((1 - lpy.detach().exp()) ** 0.5) * lpy
    return base + hp["lamb"] * reg
  raise KeyError(name)


def ogc_loss(p, base, hp):
  if base == "ce":
    return -torch.log(p)
  if base == "fl":
    return -((1 - p) ** hp["gamma"]) * torch.log(p)
  return (1 - p ** hp["q"]) / hp["q"]


def ogc_grad(p, base, hp):
  if base == "ce":
    return -1 / p
  if base == "fl":
    g = hp["gamma"]
    return g * torch.log(p) * (1 - p) ** (g - 1) - (1 - p) ** g / p
  return -(p ** (hp["q"] - 1))


def ogc_ratio(t, clean, noisy, base, hp):
  """README §14: the noisy/clean ratio of expected clipped gradients on the 1000-point grid (untruncated,
  unnormalised normal densities: the truncation and 1/sigma factors cancel)."""
  grid = np.linspace(-math.log(1 - 1e-7), -math.log(1e-7), 1000)
  g = ogc_grad(torch.tensor(np.exp(-grid)), base, hp).abs().numpy()
  tau = ogc_grad(torch.tensor(float(t)), base, hp).abs().item()  # a Python float: torch makes it float32
  clipped = np.minimum(g, tau)
  f = [np.exp(-((grid - m) ** 2) / (2 * v)) for m, v in (clean, noisy)]
  return (f[1] @ clipped / f[1].sum()) / (f[0] @ clipped / f[0].sum())


def ogc_search(ratio, target, steps=10, tol=1e-7):
  lo, hi = 1e-7, 1 - 1e-7
  if target - ratio(hi) < 0:
    return hi
  if target - ratio(lo) > 0:
    return lo
  for _ in range(steps):
    mid = (lo + hi) / 2
    cost = target - ratio(mid)
    if abs(cost) < tol:
      return mid
    if cost > 0:
      hi = mid
    else:
      lo = mid
  return hi


def check_ogc_threshold(d):
  worst = 0.0
  for c in d["search_cases"]:
    parts = [(c[k]["mean"], c[k]["covariance"]) for k in ("clean", "noisy")]
    ratio = lambda t: ogc_ratio(t, *parts, c["base"], c["hparams"])
    calls = np.asarray(c["ratio_calls"])
    worst = max(worst, rel([ratio(x) for x in calls[:, 0]], calls[:, 1]))
    worst = max(worst, rel(ogc_search(ratio, c["target"]), c["threshold"]))
  for c in d["fit_cases"]:
    fit = c["fit_gmm"]
    parts = list(zip(fit["means"], fit["covariances"]))
    for key, expected in c["get_tau_t"].items():
      base, lr = key.split("/")
      hp = {"ce": {}, "fl": {"gamma": 0.5}, "gce": {"q": 0.7}}[base]
      t = ogc_search(lambda t: ogc_ratio(t, *parts, base, hp), 1 + float(lr[2:]) * d["official_args"]["epsilon"])
      worst = max(worst, rel(t, expected["threshold"]))
  return worst


def rel(a, b):
  a, b = np.asarray(a, float), np.asarray(b, float)
  return float(np.max(np.abs(a - b) / (1 + np.abs(b))))


def leaf(x):
  return torch.tensor(x, dtype=F64, requires_grad=True)


def check_er(d):
  worst = 0.0
  for c in d["cases"]:
    hp = c["hparams"]
    z, y = leaf(c["logits"]), torch.tensor(c["labels"])
    k = z.shape[1]
    n_ce = nce(z, y).mean()
    n_nce = nnce(z, y, 1e-7, A_1E7, pmax=1 - 1e-7).mean()
    pp = F.softmax(z, 1).clamp(1e-7, 1 - 1e-7)
    pbar = (pp.sum(0) / pp.sum()).clamp(1e-7, 1 - 1e-7)
    ent = math.log(k) + (pbar * pbar.log()).sum()
    loss = hp["alpha"] * n_ce + hp["beta"] * n_nce + hp["lamb"] * ent
    (g,) = torch.autograd.grad(loss, z)
    comp = [c["components"][n] for n in ("nce_mean", "nnce_mean", "entropy_reg")]
    worst = max(
      worst, rel(loss.item(), c["mean"]), rel(g, c["grad_mean"]), rel([n_ce.item(), n_nce.item(), ent.item()], comp)
    )
  return worst


def check_gjs(d):
  worst = 0.0
  for c in d["cases"]:
    w = [float(v) for v in c["hparams"]["js_weights"].split()]
    z1, z2, y = leaf(c["logits"]), leaf(c["logits_view2"]), torch.tensor(c["labels"])
    pe = js([z1, z2], y, w)
    loss = pe.mean()
    g1, g2 = torch.autograd.grad(loss, [z1, z2])
    worst = max(
      worst,
      rel(pe.detach(), c["per_example"]),
      rel(loss.item(), c["mean"]),
      rel(g1, c["grad_mean"]),
      rel(g2, c["grad_mean_view2"]),
    )
  return worst


def check_elr(d):
  worst = 0.0
  for c in d["cases"]:
    hp = c["hparams"]
    mem = np.zeros((hp["num_examp"], hp["K"]))
    for call in c["calls"]:
      idx = call["indices"]
      z, y = leaf(call["logits"]), torch.tensor(call["labels"])
      p = F.softmax(z, 1).clamp(1e-4, 1 - 1e-4)
      pd = p.detach().numpy()
      mem[idx] = hp["beta"] * mem[idx] + (1 - hp["beta"]) * pd / pd.sum(1, keepdims=True)
      t = torch.tensor(mem[idx])  # the updated memory is used in this call's loss
      loss = F.cross_entropy(z, y) + hp["lambda"] * torch.log(1 - (t * p).sum(1)).mean()
      (g,) = torch.autograd.grad(loss, z)
      worst = max(
        worst, rel(loss.item(), call["loss"]), rel(g, call["grad_mean"]), rel(mem, call["target_memory_after"])
      )
  return worst


def main():
  special = {"anl_ce_er": check_er, "gjs_gjs": check_gjs, "elr": check_elr, "ogc_threshold": check_ogc_threshold}
  bad = []
  for f in sorted(glob.glob(os.path.join(D, "*.json"))):
    name = os.path.basename(f)[:-5]
    with open(f) as fh:
      d = json.load(fh)
    if name in special:
      worst = special[name](d)
    else:
      worst = 0.0
      for c in d["cases"]:
        z, y = leaf(c["logits"]), torch.tensor(c["labels"])
        pe = per_example(name, c["hparams"], z, y)
        loss = pe.mean()
        (g,) = torch.autograd.grad(loss, z)
        worst = max(worst, rel(pe.detach(), c["per_example"]), rel(loss.item(), c["mean"]), rel(g, c["grad_mean"]))
    print(f"{name:16s} max relative error {worst:.1e}")
    if worst > 1e-12:
      bad.append(name)
  print("MISMATCH: " + ", ".join(bad) if bad else "all fixtures reproduced")
  return 1 if bad else 0


if __name__ == "__main__":
  sys.exit(main())
