#!/usr/bin/env python3
"""Numeric fixtures from the OFFICIAL (PyTorch) implementations of noise-robust losses.

Runs the authors' own loss code (extracted byte-for-byte from pinned commits of local git mirrors) on
fixed inputs in float64 and writes JSON files under tests/fixtures/official/. The JAX ports in
robust_losses are checked against these files; torch is NOT a dependency of the library or its tests.

Usage (needs numpy + torch in some Python, NOT the project's .venv):
  python3 -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install numpy torch
  /tmp/torchenv/bin/python scripts/make_official_fixtures.py \
      [--mirror-root /work/.mirror] [--out tests/fixtures/official] [--src /tmp/official_src]

Mirrors are bare git directories <mirror-root>/<owner>+<name>/repo (as made by the session's `fetch`
tool; `git clone --mirror https://github.com/<owner>/<name> <mirror-root>/<owner>+<name>/repo` works
too). Files are read at the PINNED commit below (`git show <sha>:<path>`), so re-running regenerates the
same numbers; a newer HEAD is reported but not used.

Rules followed when running the official code:
  * the math is never edited; only irrelevant imports are stubbed (mlconfig, parse_config, tqdm,
    models.utils), and everything runs on CPU (none of the loss code used here calls .cuda() on the
    paths exercised, so no source patch was needed);
  * inputs are float64 leaf tensors; constants the code creates as float32 (torch.tensor(1e-7), the
    float32 one-hot `.float()`) are left as the code makes them (see each file's notes);
  * per_example: the official modules return a batch mean, so each row is fed separately as a batch of
    one (`per_example_source` says so); for batch-coupled losses per_example is null;
  * grad_mean = d(official batch-mean loss)/d(logits) from torch.autograd.
"""

import argparse
import ast
import importlib.util
import json
import math
import os
import subprocess
import sys
import types

import numpy as np
import torch
import torch.nn.functional as F

DTYPE = torch.float64

# key: (github owner/name, mirror dir name, pinned commit)
REPOS = {
  "anl": (
    "Virusdoll/Active-Negative-Loss",
    "Virusdoll+Active-Negative-Loss",
    "0c50009cf82959310ea21365a64b01d723ccdac7",
  ),
  "alfs": ("hitcszx/ALFs", "hitcszx+ALFs", "61245e9de0d2d8262495717546c1860ff01421b8"),
  "jal": ("cswjl/joint-asymmetric-loss", "cswjl+joint-asymmetric-loss", "0f9eb7b7730fecc319dee5cd53508a9ac26b570c"),
  "eps": ("cswjl/eps-softmax", "cswjl+eps-softmax", "f81685c3f00e4ce77b5da36a183a1cdf60fb6655"),
  "logitclip": ("hongxin001/LogitClip", "hongxin001+LogitClip", "7e45730b0073b6ba9af2d2af574300d42d50fcee"),
  "gjs": ("ErikEnglesson/GJS", "ErikEnglesson+GJS", "1a3c9e0788d4e14194771d096ab5a37ed434cebd"),
  "blcl": ("qinwei-hfut/the_BLCL", "qinwei-hfut+the_BLCL", "e4da52720243b55d198c744b790d0a7bb2d74149"),
  "nls": (
    "UCSC-REAL/negative-label-smoothing",
    "UCSC-REAL+negative-label-smoothing",
    "05078f675b42c13c89219eb8f2238bd4d794d83d",
  ),
  "apl": ("HanxunH/Active-Passive-Losses", "HanxunH+Active-Passive-Losses", "04bce5344035ca69102b9cfb0228df0f49f1707d"),
  "phuber": ("dmizr/phuber", "dmizr+phuber", "56e5f717e01d9de07b02af9e5cd44d9e436b95de"),
  "elr": ("shengliu66/ELR", "shengliu66+ELR", "934af53434a336b6db80d05d7649d23216e8ca6d"),
  "sr": ("hitcszx/lnl_sr", "hitcszx+lnl_sr", "cd3ed32110b1dfa3236bbcfe66d31db7bf62ad4b"),
  "ldr": ("Optimization-AI/ICML2023_LDR", "Optimization-AI+ICML2023_LDR", "732fc85dbd8b30b6dd16cd2dfb79d6c325558d71"),
  "ogc": ("Virusdoll/OGC", "Virusdoll+OGC", "a6b342af647257f1c1de3dc52bac85c35c88c70f"),
}

INPUT_RECIPE = {
  "normal": "rng=np.random.default_rng(0); logits=3*rng.standard_normal((8,10)); labels=rng.integers(0,10,8)",
  "extreme": "rng=np.random.default_rng(1); logits=15*rng.standard_normal((8,10)); labels=rng.integers(0,10,8)",
  "normal_k100": "rng=np.random.default_rng(2); logits=3*rng.standard_normal((8,100)); labels=rng.integers(0,100,8)",
  "extreme_k100": "rng=np.random.default_rng(3); logits=15*rng.standard_normal((8,100)); labels=rng.integers(0,100,8)",
}


def make_inputs(name):
  seed, scale, k = {
    "normal": (0, 3.0, 10),
    "extreme": (1, 15.0, 10),
    "normal_k100": (2, 3.0, 100),
    "extreme_k100": (3, 15.0, 100),
  }[name]
  rng = np.random.default_rng(seed)
  logits = scale * rng.standard_normal((8, k))
  labels = rng.integers(0, k, 8)
  return logits, labels


def cases_for_k(k):
  return ["normal", "extreme"] if k == 10 else ["normal_k100", "extreme_k100"]


# ----------------------------------------------------------------------------------------------
# Source extraction and module loading


class Sources:
  def __init__(self, mirror_root, src_root):
    self.mirror_root = mirror_root
    self.src_root = src_root
    self.head_warnings = []

  def gitdir(self, key):
    return os.path.join(self.mirror_root, REPOS[key][1], "repo")

  def git(self, key, *args):
    return subprocess.run(["git", "--git-dir", self.gitdir(key), *args], check=True, capture_output=True).stdout

  def commit(self, key):
    pinned = REPOS[key][2]
    head = self.git(key, "rev-parse", "HEAD").decode().strip()
    if head != pinned:
      self.head_warnings.append(f"{key}: mirror HEAD {head} != pinned {pinned}; using pinned")
    self.git(key, "cat-file", "-e", pinned + "^{commit}")  # raises if the pinned commit is absent
    return pinned

  def blob(self, key, path):
    return self.git(key, "rev-parse", f"{REPOS[key][2]}:{path}").decode().strip()

  def extract(self, key, path):
    data = self.git(key, "show", f"{REPOS[key][2]}:{path}")
    dst = os.path.join(self.src_root, key, path)
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    with open(dst, "wb") as f:
      f.write(data)
    return dst

  def text(self, key, path):
    return self.git(key, "show", f"{REPOS[key][2]}:{path}").decode()

  def load(self, key, path, provide=None):
    """Imports an extracted file under a unique name; `provide` maps import names it uses to modules."""
    fpath = self.extract(key, path)
    name = f"official_{key}_" + path.replace("/", "_").replace(".py", "")
    saved = {}
    for mod_name, mod in (provide or {}).items():
      saved[mod_name] = sys.modules.get(mod_name)
      sys.modules[mod_name] = mod
    try:
      spec = importlib.util.spec_from_file_location(name, fpath)
      module = importlib.util.module_from_spec(spec)
      sys.modules[name] = module
      spec.loader.exec_module(module)
    finally:
      for mod_name, old in saved.items():
        if old is None:
          sys.modules.pop(mod_name, None)
        else:
          sys.modules[mod_name] = old
    return module


def stub_module(name, **attrs):
  m = types.ModuleType(name)
  for k, v in attrs.items():
    setattr(m, k, v)
  return m


# ----------------------------------------------------------------------------------------------
# Running


def t64(x, grad=False):
  return torch.tensor(np.asarray(x), dtype=DTYPE, requires_grad=grad)


def tlab(y):
  return torch.tensor(np.asarray(y), dtype=torch.int64)


def flist(x):
  return np.asarray(x, dtype=np.float64).tolist()


def run_case(fn, logits, labels, per_example=True):
  """fn(z, y) -> official batch-mean loss. Returns a dict with per_example, mean, grad_mean."""
  z = t64(logits, grad=True)
  loss = fn(z, tlab(labels))
  (grad,) = torch.autograd.grad(loss, z)
  out = {
    "logits": flist(logits),
    "labels": np.asarray(labels).tolist(),
    "mean": float(loss.detach()),
    "grad_mean": flist(grad.detach()),
  }
  if per_example:
    per = []
    for i in range(len(labels)):
      with torch.no_grad():
        per.append(float(fn(t64(logits[i : i + 1]), tlab(labels[i : i + 1]))))
    out["per_example"] = per
    out["per_example_source"] = "official loss called on each row as a batch of 1 (it returns a batch mean)"
    out["check_mean_of_per_example_minus_mean"] = float(np.mean(per) - float(loss.detach()))
  else:
    out["per_example"] = None
    out["per_example_source"] = "none: the loss is batch-coupled"
  for v in [out["mean"]] + (out["per_example"] or []):
    assert math.isfinite(v), "non-finite value"
  assert np.all(np.isfinite(grad.numpy())), "non-finite grad"
  return out


def standard_fixture(
  src, key, file, symbol, settings, make_fn, notes, extra_cases=None, per_example=True, extra_top=None, case_extras=None
):
  """settings: {name: {'K': int, **hparams}}; make_fn(name, hp) -> fn(z, y)."""
  cases = []
  for sname, hp in settings.items():
    fn = make_fn(sname, hp)
    input_names = cases_for_k(hp["K"])
    for iname in input_names:
      logits, labels = make_inputs(iname)
      c = {"name": f"{sname}/{iname}", "hparams_name": sname, "hparams": hp, "inputs": iname}
      c.update(run_case(fn, logits, labels, per_example=per_example))
      if case_extras:
        c.update(case_extras(sname, hp, logits, labels))
      cases.append(c)
    for ec in (extra_cases or {}).get(sname, []):
      logits, labels, cname, info = ec
      c = {"name": f"{sname}/{cname}", "hparams_name": sname, "hparams": hp, "inputs": cname}
      c.update(info)
      c.update(run_case(fn, logits, labels, per_example=per_example))
      if case_extras:
        c.update(case_extras(sname, hp, logits, labels))
      cases.append(c)
  files = file if isinstance(file, list) else [file]
  fx = {
    "repo": REPOS[key][0],
    "commit": src.commit(key),
    "file": file,
    "file_blob_sha": {f: src.blob(key, f) for f in files},
    "symbol": symbol,
    "torch_version": torch.__version__,
    "dtype": "float64",
    "hparams": settings,
    "input_recipe": INPUT_RECIPE,
    "cases": cases,
    "notes": notes,
    "generator": "scripts/make_official_fixtures.py",
  }
  if extra_top:
    fx.update(extra_top)
  return fx


class NoParams(torch.nn.Module):
  """A model with no parameters: makes the in-loss L1 penalty sum(|theta|) exactly 0."""


# ----------------------------------------------------------------------------------------------
# 1. Active-Negative-Loss


def gen_anl(src):
  loss = src.load("anl", "loss.py")
  cfg = {
    n: json.loads(src.text("anl", f"config/{n}.json"))["loss"]
    for n in [
      "cifar10_anl_ce",
      "cifar100_anl_ce",
      "mnist_anl_ce",
      "webvision_anl_ce",
      "cifar10_anl_fl",
      "cifar100_anl_fl",
      "mnist_anl_fl",
      "cifar10_anl_ce_er",
      "cifar100_anl_ce_er",
    ]
  }
  model = NoParams()
  a_nnce = float(loss.NormalizedNegativeCrossEntropy(10, 1e-7).A)
  nnfl = loss.NormalizedNegativeFocalLoss(10, 0.5, 1e-7)
  common = (
    "The L1 penalty delta*sum_theta |theta| (ActiveNegativeLoss.forward / ANL_CE_ER.forward: "
    "`l1_norm = sum(p.abs().sum() for p in model.parameters())`, added as `+ self.delta * l1_norm` "
    "to the returned loss; the configs set optimizer weight_decay=0) is EXCLUDED here by passing "
    "a model with no parameters (l1_norm == 0). "
  )
  out = {}

  out["anl_nnce"] = standard_fixture(
    src,
    "anl",
    "loss.py",
    "NormalizedNegativeCrossEntropy (built by loss.nnce(num_classes, config))",
    {"min_prob_1e-7_k10": {"K": 10, "min_prob": 1e-7}, "min_prob_1e-7_k100": {"K": 100, "min_prob": 1e-7}},
    lambda s, hp: loss.nnce(hp["K"], {"min_prob": hp["min_prob"]}),
    "p=softmax(z).clamp(1e-7, 1) (max=1, NOT 1-1e-7); q=A+log p; nnce=1-q_y/sum_k q_k; mean over batch. "
    f"A = -torch.tensor(1e-7).log() is computed in FLOAT32: A = {a_nnce!r} (float64 -log(1e-7) = "
    f"{-math.log(1e-7)!r}). The clamp bound itself is the Python float 1e-7.",
  )

  out["anl_nnfl"] = standard_fixture(
    src,
    "anl",
    "loss.py",
    "NormalizedNegativeFocalLoss (built by loss.nnfl(num_classes, config))",
    {
      "gamma0.5_k10": {"K": 10, "gamma": 0.5, "min_prob": 1e-7},
      "gamma0.5_k100": {"K": 100, "gamma": 0.5, "min_prob": 1e-7},
    },
    lambda s, hp: loss.nnfl(hp["K"], {"gamma": hp["gamma"], "min_prob": hp["min_prob"]}),
    "logpt = log_softmax(z).clamp(min=logmp) with logmp = torch.tensor(1e-7).log() in FLOAT32 "
    f"({float(nnfl.logmp)!r}); A = -(1-1e-7)**gamma * logmp (float32 tensor: {float(nnfl.A)!r}); "
    "normalizor = sum_k -(1-exp(logpt_k.data))**gamma * logpt_k  (prefactor detached via .data, but "
    "logpt_k itself is NOT detached inside normalizor!); FL_y = -(1-pt)**gamma * logpt_y with pt = "
    "exp(logpt_y.data) detached; loss = 1 - (A - FL_y)/(K*A - normalizor); mean over batch. K*A is "
    "int * float32 tensor, so it is rounded to float32 (K=10: 161.18093872070312). Gradient "
    "flows through logpt_y (clamped; zero grad where log_softmax < logmp) and through the logpt_k "
    "inside normalizor, never through the (1-p)^gamma factors.",
  )

  def anl_settings(prefix, names):
    s = {}
    for n in names:
      c = cfg[n]
      k = 100 if n.startswith("cifar100") else 10
      s[n] = {"K": k, **{kk: c[kk] for kk in c if kk not in ("name", "is_anl")}}
    return s

  out["anl_ce"] = standard_fixture(
    src,
    "anl",
    "loss.py",
    "ActiveNegativeLoss(NormalizedCrossEntropy, NormalizedNegativeCrossEntropy) "
    "as built by loss.anl_ce(num_classes, config)",
    anl_settings("anl_ce", ["cifar10_anl_ce", "mnist_anl_ce", "webvision_anl_ce", "cifar100_anl_ce"]),
    lambda s, hp: (lambda m: lambda z, y: m(z, y, model))(loss.anl_ce(hp["K"], hp)),
    common + "loss = alpha*mean(NCE) + beta*mean(NNCE) (+ delta*L1, excluded). NCE = "
    "(-log_softmax_y)/(-sum_k log_softmax_k), no clamp. Hyperparameters are the repo configs "
    "config/<name>.json (delta recorded but inactive). mnist/webvision configs are run on K=10 inputs "
    "(webvision really has K=50).",
  )

  out["anl_fl"] = standard_fixture(
    src,
    "anl",
    "loss.py",
    "ActiveNegativeLoss(NormalizedFocalLoss, NormalizedNegativeFocalLoss) as built by loss.anl_fl(num_classes, config)",
    anl_settings("anl_fl", ["cifar10_anl_fl", "mnist_anl_fl", "cifar100_anl_fl"]),
    lambda s, hp: (lambda m: lambda z, y: m(z, y, model))(loss.anl_fl(hp["K"], hp)),
    common + "loss = alpha*mean(NFL) + beta*mean(NNFL). NFL (NormalizedFocalLoss, scale 1): "
    "normalizor = sum_k -(1-exp(logp_k.data))**gamma * logp_k (prefactor detached, logp_k not), "
    "FL_y = -(1-pt)**gamma*logp_y with pt detached; NFL = FL_y/normalizor; no clamp in NFL.",
  )

  def er_extras(sname, hp, logits, labels):
    m = loss.anl_ce_er(hp["K"], hp)
    with torch.no_grad():
      z, y = t64(logits), tlab(labels)
      return {
        "components": {
          "nce_mean": float(m.nce(z, y)),
          "nnce_mean": float(m.nnce(z, y)),
          "entropy_reg": float(m.entropy_reg(z)),
        }
      }

  out["anl_ce_er"] = standard_fixture(
    src,
    "anl",
    "loss.py",
    "ANL_CE_ER (built by loss.anl_ce_er(num_classes, config))",
    anl_settings("anl_ce_er", ["cifar10_anl_ce_er", "cifar100_anl_ce_er"]),
    lambda s, hp: (lambda m: lambda z, y: m(z, y, model))(loss.anl_ce_er(hp["K"], hp)),
    common + "BATCH-COUPLED, so per_example is null; `components` are the official nce()/nnce()/"
    "entropy_reg() methods. loss = alpha*nce + beta*nnce + delta*L1 + lamb*entropy_reg. Differences "
    "to the stand-alone NNCE: here p is clamped to [1e-7, 1-1e-7] (not [1e-7, 1]). entropy_reg: "
    "P = softmax(z).clamp(1e-7, 1-1e-7); pbar = P.sum(0)/P.sum() (divides by the clamped total, not "
    "B); pbar = pbar.clamp(1e-7, 1-1e-7); entropy_reg = log(K) + sum_c pbar_c log pbar_c (math.log, "
    'float64). REPO BUG: config/*_anl_ce_er.json lack "is_anl": true, so trainer.py would call '
    "loss_function(logits, labels) without `model` and raise TypeError; the configs as shipped cannot "
    "run ANL-CE-ER.",
    per_example=False,
    case_extras=er_extras,
  )
  return out


# ----------------------------------------------------------------------------------------------
# 2. ALFs


def gen_alfs(src):
  losses = src.load("alfs", "lnl/losses.py")
  config = src.load("alfs", "lnl/config.py", provide={"losses": losses})
  C = {
    "cifar10": (config.CIFAR10_CONFIG, 10),
    "cifar100": (config.CIFAR100_CONFIG, 100),
    "mnist": (config.MNIST_CONFIG, 10),
  }
  out = {}

  def hp_of(obj):
    d = {}
    for attr in ("a", "q", "p", "scale", "num_classes"):
      if hasattr(obj, attr):
        d[attr] = getattr(obj, attr)
    return d

  def from_config(key, fname, symbol, notes):
    settings, objs = {}, {}
    for ds, (cd, k) in C.items():
      obj = cd[key]
      if hasattr(obj, "nce"):
        second = [m for n, m in obj.named_children() if n != "nce"][0]
        hp = {
          "K": k,
          "alpha": obj.nce.scale,
          "beta": second.scale,
          **{kk: v for kk, v in hp_of(second).items() if kk != "scale"},
        }
      else:
        hp = {"K": k, **hp_of(obj)}
      settings[f"{ds}_config"] = hp
      objs[f"{ds}_config"] = obj
    out[fname] = standard_fixture(
      src,
      "alfs",
      "lnl/losses.py",
      symbol,
      settings,
      lambda s, hp: objs[s],
      notes,
      extra_top={"config_file": "lnl/config.py"},
    )

  from_config(
    "AGCE",
    "alfs_agce",
    'AGCELoss (lnl/config.py "AGCE")',
    "loss = ((a+1)**q - (a+p_y)**q)/q * scale, p=softmax(z) with NO clamp; mean over batch. "
    "Instances taken from lnl/config.py {MNIST,CIFAR10,CIFAR100}_CONFIG; CIFAR100 uses the same "
    "a=0.6, q=0.6 as CIFAR10 (only num_classes differs).",
  )
  from_config(
    "AUL",
    "alfs_aul",
    'AUELoss (lnl/config.py "AUL")',
    "loss = ((a-p_y)**q - (a-1)**q)/q * scale, no clamp; class is named AUELoss; mean over batch.",
  )
  from_config(
    "AEL",
    "alfs_ael",
    'AExpLoss (lnl/config.py "AEL")',
    "loss = exp(-p_y/a) * scale, no clamp, NO constant offset (loss at p_y=1 is exp(-1/a), not 0); mean over batch.",
  )
  from_config(
    "NCEandAGCE",
    "alfs_nce_agce",
    'NCEandAGCE (lnl/config.py "NCEandAGCE")',
    "loss = alpha*mean(NCE) + beta*mean(AGCE) where NCE = (-log_softmax_y)/(-sum_k log_softmax_k) "
    "(no clamp). MNIST config has alpha=0 (pure AGCE).",
  )
  from_config(
    "NCEandAUL", "alfs_nce_aul", 'NCEandAUE (lnl/config.py "NCEandAUL")', "loss = alpha*mean(NCE) + beta*mean(AUL)."
  )
  from_config(
    "NCEandAEL",
    "alfs_nce_ael",
    'NCEandAEL (lnl/config.py "NCEandAEL")',
    "loss = alpha*mean(NCE) + beta*mean(AEL) (AEL = exp(-p_y/a), no offset).",
  )

  out["alfs_anorm"] = standard_fixture(
    src,
    "alfs",
    "lnl/losses.py",
    "ANormLoss",
    {
      "class_default_a1.5_p0.9": {"K": 10, "a": 1.5, "p": 0.9},
      "NCEandANL_default_a2_p0.7": {"K": 10, "a": 2, "p": 0.7},
      "a1.5_p0.9_k100": {"K": 100, "a": 1.5, "p": 0.9},
    },
    lambda s, hp: losses.ANormLoss(num_classes=hp["K"], a=hp["a"], p=hp["p"]),
    "Not used in any lnl/config.py entry (only NCEandANL / ANLandRCE classes reference it; their defaults "
    "a=2, p=0.7). p = softmax(z).clamp(1e-5, 1); loss_i = sum_k |a*e_yk - p_k|**p - (a-1)**p; "
    "returned value = mean_i(loss_i) * scale / p (the /p is applied after the batch mean).",
  )
  return out


# ----------------------------------------------------------------------------------------------
# 3. Joint asymmetric loss


def gen_jal(src):
  losses = src.load("jal", "losses.py")
  config = src.load("jal", "config.py", provide={"losses": losses})
  out = {}
  out["jal_amse"] = standard_fixture(
    src,
    "jal",
    "losses.py",
    "AMSELoss",
    {"a30_k10": {"K": 10, "a": 30, "scale": 1}, "a20_k100": {"K": 100, "a": 20, "scale": 1}},
    lambda s, hp: losses.AMSELoss(a=hp["a"], scale=hp["scale"]),
    "loss = scale * mean over ALL B*K entries of (softmax(z) - a*onehot)**2, i.e. per example "
    "(1/K) sum_k (p_k - a e_yk)^2. No clamp. Standalone AMSE is not in the configs; a=30 (C10) and "
    "a=20 (C100) are the values NCEandAMSE uses.",
  )

  def nce_amse_hp(obj, k):
    return {"K": k, "alpha": obj.loss1.scale, "beta": obj.loss2.scale, "a": obj.loss2.a}

  objs = {
    "cifar10_config": config.CIFAR10_CONFIG["NCEandAMSE"],
    "cifar100_config": config.CIFAR100_CONFIG["NCEandAMSE"],
    "webvision_config": config.WEBVISION_CONFIG["NCEandAMSE"],
  }
  ks = {"cifar10_config": 10, "cifar100_config": 100, "webvision_config": 10}
  out["jal_nce_amse"] = standard_fixture(
    src,
    "jal",
    "losses.py",
    'NCEandAMSE (JAL-CE; config.py "NCEandAMSE")',
    {n: nce_amse_hp(o, ks[n]) for n, o in objs.items()},
    lambda s, hp: objs[s],
    "loss = alpha*mean(NCE) + beta*AMSE (AMSE mean over B*K). webvision config run on K=10 inputs. "
    "Training adds an L1 penalty OUTSIDE the loss in main.py (loss += l1_weight_decay*sum|theta|; "
    "config.get_weight_decay_config: 5e-5 C10, 5e-6 C100 for AMSE losses, L2 wd 0), excluded here.",
    extra_top={"config_file": "config.py"},
  )

  objs_fl = {
    "cifar10_config": config.CIFAR10_CONFIG["NFLandAMSE"],
    "cifar100_config": config.CIFAR100_CONFIG["NFLandAMSE"],
  }
  out["jal_nfl_amse"] = standard_fixture(
    src,
    "jal",
    "losses.py",
    'NFLandAMSE (JAL-FL; config.py "NFLandAMSE")',
    {
      n: {"K": ks[n], "alpha": o.loss1.scale, "beta": o.loss2.scale, "a": o.loss2.a, "gamma": o.loss1.gamma}
      for n, o in objs_fl.items()
    },
    lambda s, hp: objs_fl[s],
    "loss = alpha*mean(NFL) + beta*AMSE. NFL as in APL: normalizor = sum_k -(1-exp(logp_k.data))**gamma "
    "* logp_k (prefactor detached, logp_k not); numerator pt detached.",
    extra_top={"config_file": "config.py"},
  )

  objs_nn = {
    "cifar10_config": config.CIFAR10_CONFIG["NCEandNNCE"],
    "cifar100_config": config.CIFAR100_CONFIG["NCEandNNCE"],
  }
  out["jal_nce_nnce"] = standard_fixture(
    src,
    "jal",
    "losses.py",
    'NCEandNNCE (ANL-CE as vendored in JAL; config.py "NCEandNNCE")',
    {n: {"K": ks[n], "alpha": o.alpha, "beta": o.beta, "min_prob": o.nnce.min_prob} for n, o in objs_nn.items()},
    lambda s, hp: objs_nn[s],
    "Same formula as Virusdoll NNCE but min_prob = eps = 1e-8 (NOT 1e-7): p.clamp(1e-8, 1), "
    f"A = -torch.tensor(1e-8).log() in float32 = {float(objs_nn['cifar10_config'].nnce.A)!r}. "
    "loss = alpha*mean(NCE) + beta*mean(NNCE). L1 (5e-5 C10, 5e-7 C100) added outside, excluded.",
    extra_top={"config_file": "config.py"},
  )

  objs_ldr = {"cifar10_config": config.CIFAR10_CONFIG["LDR"], "cifar100_config": config.CIFAR100_CONFIG["LDR"]}
  out["jal_ldr"] = standard_fixture(
    src,
    "jal",
    "losses.py",
    'LDRLoss_V1 (config.py "LDR")',
    {n: {"K": ks[n], "threshold": o.threshold, "Lambda": o.Lambda} for n, o in objs_ldr.items()},
    lambda s, hp: objs_ldr[s],
    "s = softplus(z); s = s/mean_k(s); d_k = threshold*(1-e_yk) + s_k - s_y (threshold*(1-onehot) is "
    "computed in float32 because the one-hot is .float(): threshold 0.1 acts as 0.10000000149011612); "
    "d = d/Lambda; "
    "m = max_k d_k (detached); loss = Lambda*(log(mean_k exp(d_k - m)) + m); mean over batch. "
    "Takes integer labels (one-hot made inside), unlike the official ICML2023_LDR version which takes "
    "one-hot y_true.",
    extra_top={"config_file": "config.py"},
  )

  lc_settings = {
    "cifar10_config_delta2.5": {"K": 10, "delta": config.CIFAR10_CONFIG["CEandLC"].delta},
    "delta1.0": {"K": 10, "delta": 1.0},
    "delta1.5": {"K": 10, "delta": 1.5},
    "cifar100_config_delta0.5": {"K": 100, "delta": config.CIFAR100_CONFIG["CEandLC"].delta},
  }
  extra = {
    s: [threshold_case(1.0 / hp["delta"], hp["K"], seed=40 + i, offset=1e-8)]
    for i, (s, hp) in enumerate(lc_settings.items())
  }
  out["jal_ce_lc"] = standard_fixture(
    src,
    "jal",
    "losses.py",
    "CEandLC",
    lc_settings,
    lambda s, hp: losses.CEandLC(delta=hp["delta"]),
    "n = ||z||_2 + 1e-8; clip iff n > 1/delta; if clipped z <- z/n*delta (so the clipped norm is ~delta, "
    "the threshold is 1/delta: DISCONTINUOUS in z unless delta == 1); p = softmax(z).clamp(1e-8, 1); "
    "loss = nll(log p) (mean). Gradient flows through n (not detached). The `threshold` cases put rows "
    "just below / above the threshold 1/delta (see row_norms, clipped).",
    extra_cases=extra,
    extra_top={"config_file": "config.py"},
  )
  return out


def threshold_case(thresh, k, seed, offset):
  """Pairs of rows sharing a direction and label, with ||z||_2 just below / above `thresh`.

  The code clips iff ||z|| + offset > thresh. Rows (2j, 2j+1) share direction d_j and label, so the
  per_example jump inside a pair shows whether the clipped loss is continuous at the threshold."""
  rng = np.random.default_rng(seed)
  d = rng.standard_normal((4, k))
  d /= np.linalg.norm(d, axis=1, keepdims=True)
  pair_labels = rng.integers(0, k, 4)
  mult = np.array([0.5, 2.0, 1 - 1e-6, 1 + 1e-6, 1 - 1e-3, 1 + 1e-3, 0.99, 1.01])
  logits = np.repeat(d, 2, axis=0) * (thresh * mult)[:, None]
  labels = np.repeat(pair_labels, 2)
  norms = np.linalg.norm(logits, axis=1)
  info = {
    "row_norms": norms.tolist(),
    "norm_multiples_of_threshold": mult.tolist(),
    "clipped": [bool(n + offset > thresh) for n in norms],
    "norm_offset_in_code": offset,
    "threshold": thresh,
    "recipe": f"rng=default_rng({seed}); d=standard_normal((4,{k})) row-normalised; "
    f"pair_labels=rng.integers(0,K,4); rows 2j,2j+1 = d_j*threshold*mult, label pair_labels[j]",
  }
  return logits, labels, "threshold", info


# ----------------------------------------------------------------------------------------------
# 4. eps-softmax


def gen_eps(src):
  losses = src.load("eps", "losses.py")
  config = src.load("eps", "config.py", provide={"losses": losses})
  out = {}
  out["eps_ece"] = standard_fixture(
    src,
    "eps",
    "losses.py",
    "ECELoss",
    {
      "m1e5_k10": {"K": 10, "m": 1e5},
      "m1e3_k10": {"K": 10, "m": 1e3},
      "m1e4_k100": {"K": 100, "m": 1e4},
      "m1e2_k100": {"K": 100, "m": 1e2},
    },
    lambda s, hp: losses.ECELoss(m=hp["m"]),
    "p = softmax(z).clone(); p[i, argmax_k p_ik] += m (in-place; constant w.r.t. z, so the gradient is "
    "that of softmax/(m+1)); p = p/(m+1); p = clamp(p, min=1e-8) (eps=1e-8; zero gradient where "
    "p/(m+1) < 1e-8, i.e. for p_y < ~1e-8*(m+1) when y is not the argmax); loss = nll(log p) mean. "
    "Ties in argmax: torch.argmax picks the first maximal index.",
  )

  def eps_obj(ds, nt, nr):
    args = types.SimpleNamespace(loss="ECEandMAE", dataset=ds, noise_type=nt, noise_rate=nr)
    return config.get_eps_softmax(args)

  combos = {
    "cifar10_symmetric": ("cifar10", "symmetric", "0.4", 10),
    "cifar10_asymmetric": ("cifar10", "asymmetric", "0.4", 10),
    "cifar100_symmetric_0.4": ("cifar100", "symmetric", "0.4", 100),
    "cifar100_asymmetric_0.4": ("cifar100", "asymmetric", "0.4", 100),
  }
  objs = {n: eps_obj(*c[:3]) for n, c in combos.items()}
  out["eps_ece_mae"] = standard_fixture(
    src,
    "eps",
    "losses.py",
    "ECEandMAE (via config.get_eps_softmax)",
    {
      n: {
        "K": combos[n][3],
        "alpha": o.alpha,
        "beta": o.beta,
        "m": o.ece.m,
        "mae_scale": o.mae.scale,
        "config_args": dict(zip(["dataset", "noise_type", "noise_rate"], combos[n][:3])),
      }
      for n, o in objs.items()
    },
    lambda s, hp: objs[s],
    "loss = alpha*ECE + beta*MAE with MAELoss default scale=2.0: MAE = 2*(1-p_y) (unclamped softmax). "
    "C100 symmetric alpha depends on the noise rate (config.py: 0->0.1, 0.2->0.05, 0.4->0.03, "
    "0.6->0.00125 (sic, 0.00125 in the code), 0.8->0.0075); asymmetric 0.1->0.015, 0.2->0.007, "
    "0.3->0.005, 0.4->0.004 (m=1e2).",
    extra_top={"config_file": "config.py"},
  )
  return out


# ----------------------------------------------------------------------------------------------
# 5. LogitClip


def gen_logitclip(src):
  base = src.load(
    "logitclip",
    "algorithms/base_framework.py",
    provide={
      "tqdm": stub_module("tqdm", tqdm=lambda x: x),
      "models": stub_module("models"),
      "models.utils": stub_module("models.utils", build_model=None),
    },
  )
  pkg = stub_module("algorithms")
  pkg.__path__ = []
  clip = src.load("logitclip", "algorithms/clip.py", provide={"algorithms": pkg, "algorithms.base_framework": base})

  def make(s, hp):
    obj = object.__new__(clip.LogitClipping)
    obj.device = torch.device("cpu")
    obj.args = types.SimpleNamespace(temp=hp["temp"], lp=hp["lp"])
    obj.net = lambda x: x  # the "network" returns its input: the logits are the leaf we differentiate
    obj.loss_function = torch.nn.CrossEntropyLoss()  # as in SingleModel.__init__
    return lambda z, y: obj.train_batch(None, z, y, 0)

  settings = {
    "temp1.0": {"K": 10, "temp": 1.0, "lp": 2},
    "temp1.5": {"K": 10, "temp": 1.5, "lp": 2},
    "temp1.5_k100": {"K": 100, "temp": 1.5, "lp": 2},
  }
  extra = {
    s: [threshold_case(hp["temp"], hp["K"], seed=50 + i, offset=1e-7)] for i, (s, hp) in enumerate(settings.items())
  }
  fx = standard_fixture(
    src,
    "logitclip",
    "algorithms/clip.py",
    "LogitClipping.train_batch",
    settings,
    make,
    "delta = 1/temp; n = ||z||_p + 1e-7 (p = args.lp = 2); clip iff n > temp; clipped rows z <- z/n*delta "
    "(= z/n/temp). The THRESHOLD is temp but the clipped norm is 1/temp: the map is DISCONTINUOUS at "
    "||z|| = temp unless temp == 1 (e.g. temp=1.5: a row of norm 1.4999 is kept at norm 1.5, one of "
    "norm 1.5001 becomes norm 0.667). The paper describes clipping to norm 1/tau when the norm exceeds "
    "1/tau (continuous); the code compares with temp instead. Gradient flows through n. Loss = "
    "nn.CrossEntropyLoss() (mean) on the final logits; no clamp. Run by calling the real "
    "LogitClipping.train_batch with net=identity on CPU (SingleModel.__init__ skipped; its "
    "loss_function = nn.CrossEntropyLoss() reproduced). See the `threshold` cases (row_norms, "
    "norm_multiples_of_threshold).",
    extra_cases=extra,
    extra_top={
      "discontinuous": {"temp1.0": False, "temp1.5": True},
      "readme_default_temp": 1.5,
      "train_py_default_temp": 1.0,
    },
  )
  return {"logitclip": fx}


# ----------------------------------------------------------------------------------------------
# 6. GJS


def gen_gjs(src):
  losses = src.load("gjs", "losses.py")
  out = {}
  out["gjs_js"] = standard_fixture(
    src,
    "gjs",
    "losses.py",
    "JensenShannonDivergenceWeightedScaled (loss: JSWCS, one view)",
    {
      "c10_sym40_w0.7_0.3": {"K": 10, "js_weights": "0.7 0.3"},
      "c10_sym60_w0.9_0.1": {"K": 10, "js_weights": "0.9 0.1"},
      "c100_sym40_w0.3_0.7": {"K": 100, "js_weights": "0.3 0.7"},
    },
    lambda s, hp: losses.JensenShannonDivergenceWeightedScaled(hp["K"], hp["js_weights"]),
    js_notes(),
  )

  # two augmented views: independent draws
  def gjs_cases(sname, hp, k, seed_base):
    cases = []
    for j, iname in enumerate(cases_for_k(k)):
      logits, labels = make_inputs(iname)
      scale = 3.0 if "normal" in iname else 15.0
      rng = np.random.default_rng(seed_base + j)
      view2 = scale * rng.standard_normal(logits.shape)
      m = losses.JensenShannonDivergenceWeightedScaled(k, hp["js_weights"])
      zs = [t64(logits, grad=True), t64(view2, grad=True)]
      loss = m(zs, tlab(labels))
      g = torch.autograd.grad(loss, zs)
      per = []
      with torch.no_grad():
        for i in range(8):
          per.append(float(m([t64(logits[i : i + 1]), t64(view2[i : i + 1])], tlab(labels[i : i + 1]))))
      cases.append(
        {
          "name": f"{sname}/{iname}",
          "hparams_name": sname,
          "hparams": hp,
          "inputs": iname,
          "logits": flist(logits),
          "logits_view2": flist(view2),
          "view2_recipe": f"{scale}*np.random.default_rng({seed_base + j}).standard_normal(shape)",
          "labels": labels.tolist(),
          "per_example": per,
          "per_example_source": "official loss on each row (both views) as a batch of 1",
          "check_mean_of_per_example_minus_mean": float(np.mean(per) - float(loss.detach())),
          "mean": float(loss.detach()),
          "grad_mean": flist(g[0]),
          "grad_mean_view2": flist(g[1]),
        }
      )
    return cases

  settings = {
    "c10_sym40_w0.9_0.05_0.05": {"K": 10, "js_weights": "0.9 0.05 0.05"},
    "c10_sym20_w0.3_0.35_0.35": {"K": 10, "js_weights": "0.3 0.35 0.35"},
    "c100_sym40_w0.5_0.25_0.25": {"K": 100, "js_weights": "0.5 0.25 0.25"},
  }
  cases = []
  for i, (s, hp) in enumerate(settings.items()):
    cases += gjs_cases(s, hp, hp["K"], 60 + 10 * i)
  out["gjs_gjs"] = {
    "repo": REPOS["gjs"][0],
    "commit": src.commit("gjs"),
    "file": "losses.py",
    "file_blob_sha": {"losses.py": src.blob("gjs", "losses.py")},
    "symbol": "JensenShannonDivergenceWeightedScaled with pred = [logits_view1, logits_view2] (GJS, 2 views)",
    "torch_version": torch.__version__,
    "dtype": "float64",
    "hparams": settings,
    "input_recipe": INPUT_RECIPE,
    "cases": cases,
    "notes": js_notes() + " GJS: distribs = [onehot, softmax(view1), softmax(view2)] with weights "
    "(pi1, pi2, pi3); m = sum_i pi_i d_i; loss = scale * sum_i pi_i * KL(d_i || m), "
    "scale = -1/((1-pi1) log(1-pi1)). train.py passes a list of logits when there are >1 "
    "augmented views.",
    "generator": "scripts/make_official_fixtures.py",
  }
  return out


def js_notes():
  return (
    'weights "pi1 pi2 ..." parsed from the js_weights string (pi1 = label weight); scale = '
    "-1/((1-pi1)*np.log(1-pi1)) (float64 numpy); m = pi1*onehot + sum_i pi_i*softmax(z_i) (pi1*onehot "
    "is computed in float32 since the one-hot is .float(): e.g. 0.7 acts as 0.699999988079071 inside "
    "m only; the outer weights and the scale use the float64 Python values); "
    "log_m = m.clamp(1e-7, 1).log(); custom_kl_div(log_m, d) = mean_batch sum_k where(d>0, "
    "d*(d.clamp(min=1e-7).log() - log_m), 0); loss = scale * sum_i pi_i * custom_kl_div(log_m, d_i). "
    "Note the clamp on d inside the log (d<1e-7 gets log(1e-7) and zero gradient through that log, "
    "but the d* prefactor still carries gradient) and the where(d>0) mask (only matters when "
    "softmax underflows to exactly 0, e.g. in float32)."
  )


# ----------------------------------------------------------------------------------------------
# 7. Taylor CE (third-party)


def gen_taylor(src):
  lf = src.load("blcl", "loss_functions.py")
  fns = {"t1": lf.Taylor_ce_loss_1, "t2": lf.Taylor_ce_loss_2}
  fx = standard_fixture(
    src,
    "blcl",
    "loss_functions.py",
    "Taylor_ce_loss_1 (t=1), Taylor_ce_loss_2 (t=2)",
    {
      "t1": {"K": 10, "t": 1, "function": "Taylor_ce_loss_1"},
      "t2": {"K": 10, "t": 2, "function": "Taylor_ce_loss_2"},
      "t2_k100": {"K": 100, "t": 2, "function": "Taylor_ce_loss_2"},
    },
    lambda s, hp: fns["t%d" % hp["t"]],
    "THIRD-PARTY reference: no official code of Feng et al. (IJCAI 2020) was found. e = 1 - softmax(z)_y "
    "(no clamp); t=1: mean(e); t=2: mean(e + e*e/2). Only t=1 and t=2 exist in this file. "
    "Paper form: sum_{k=1}^t (1-p_y)^k/k.",
  )
  fx["third_party"] = True
  return {"taylor_ce": fx}


# ----------------------------------------------------------------------------------------------
# 8. NLS / GLS


def gen_nls(src):
  loss = src.load("nls", "loss.py")
  fx = standard_fixture(
    src,
    "nls",
    "loss.py",
    "loss_gls",
    {
      "r0.4": {"K": 10, "smooth_rate": 0.4, "wa": 0, "wb": 1},
      "r-0.2": {"K": 10, "smooth_rate": -0.2, "wa": 0, "wb": 1},
      "r-2.0": {"K": 10, "smooth_rate": -2.0, "wa": 0, "wb": 1},
      "r-0.2_k100": {"K": 100, "smooth_rate": -0.2, "wa": 0, "wb": 1},
    },
    lambda s, hp: lambda z, y: loss.loss_gls(0, z, y, hp["smooth_rate"], hp["wa"], hp["wb"]),
    "logp = log_softmax(z); nll = -logp_y; smooth = -mean_k logp_k (mean over ALL K classes, label "
    "included); loss = (wa + wb*(1-r))*nll + wb*r*smooth; sum/B. Equivalent to CE with target "
    "(1-r)*onehot + r/K (uniform includes the label class). r<0 is NLS. The epoch argument is unused. "
    "Defaults wa=0, wb=1 (main_GLS_*.py argparse).",
  )
  return {"nls_gls": fx}


# ----------------------------------------------------------------------------------------------
# 9. Active-Passive Losses


def gen_apl(src):
  loss = src.load("apl", "loss.py", provide={"mlconfig": stub_module("mlconfig", register=lambda x: x)})
  out = {}
  detach_fl = (
    "pt = exp(logpt.data) is DETACHED, so the modulator (1-pt)**gamma is a constant for "
    "autograd: grad = (1-p_y)^gamma * grad(CE) (value is the usual focal loss)."
  )
  out["apl_fl"] = standard_fixture(
    src,
    "apl",
    "loss.py",
    "FocalLoss",
    {"gamma0.5": {"K": 10, "gamma": 0.5}, "gamma0.5_k100": {"K": 100, "gamma": 0.5}},
    lambda s, hp: loss.FocalLoss(gamma=hp["gamma"]),
    "logpt = log_softmax(z)_y (no clamp); loss = -(1-pt)**gamma * logpt; mean (size_average=True). "
    + detach_fl
    + " configs/*/*/focal.yaml: gamma=0.5.",
  )
  out["apl_nfl"] = standard_fixture(
    src,
    "apl",
    "loss.py",
    "NormalizedFocalLoss",
    {
      "cifar10_scale10": {"K": 10, "scale": 10.0, "gamma": 0.5},
      "cifar100_scale1": {"K": 100, "scale": 1.0, "gamma": 0.5},
    },
    lambda s, hp: loss.NormalizedFocalLoss(scale=hp["scale"], gamma=hp["gamma"], num_classes=hp["K"]),
    "logp = log_softmax(z) (no clamp); normalizor = sum_k -(1-exp(logp_k.data))**gamma * logp_k: the "
    "(1-p_k)^gamma factors are DETACHED but logp_k is NOT, so the normaliser still carries gradient "
    "-sum_k (1-p_k)^gamma * grad(logp_k); numerator -(1-pt)**gamma*logp_y with pt detached; "
    "loss = scale*numerator/normalizor; mean. Configs: cifar10/sym/nfl.yaml scale 10, cifar100 scale 1.",
  )
  out["apl_nce_rce"] = standard_fixture(
    src,
    "apl",
    "loss.py",
    "NCEandRCE",
    {"cifar10": {"K": 10, "alpha": 1.0, "beta": 1.0}, "cifar100": {"K": 100, "alpha": 10.0, "beta": 0.1}},
    lambda s, hp: loss.NCEandRCE(alpha=hp["alpha"], beta=hp["beta"], num_classes=hp["K"]),
    "NCE = (-logp_y)/(-sum_k logp_k) (log_softmax, no clamp); RCE = -sum_k clamp(p_k,1e-7,1)*"
    "log(clamp(onehot,1e-4,1)) = -log(1e-4)*(sum_{k!=y} clamp(p_k)) (log(1e-4) computed on a float32 "
    "one-hot: log(float32(1e-4))); loss = alpha*mean(NCE) + beta*mean(RCE).",
  )
  out["apl_sce"] = standard_fixture(
    src,
    "apl",
    "loss.py",
    "SCELoss",
    {"cifar10": {"K": 10, "alpha": 0.1, "beta": 1.0}, "cifar100": {"K": 100, "alpha": 6.0, "beta": 0.1}},
    lambda s, hp: loss.SCELoss(alpha=hp["alpha"], beta=hp["beta"], num_classes=hp["K"]),
    "loss = alpha*CrossEntropyLoss(z,y) + beta*mean(RCE), RCE as in NCEandRCE (p clamp [1e-7,1], "
    "one-hot clamp [1e-4,1] in float32).",
  )
  out["apl_nfl_rce"] = standard_fixture(
    src,
    "apl",
    "loss.py",
    "NFLandRCE",
    {
      "cifar10": {"K": 10, "alpha": 1.0, "beta": 1.0, "gamma": 0.5},
      "cifar100": {"K": 100, "alpha": 10.0, "beta": 0.1, "gamma": 0.5},
    },
    lambda s, hp: loss.NFLandRCE(alpha=hp["alpha"], beta=hp["beta"], num_classes=hp["K"], gamma=hp["gamma"]),
    "alpha*mean(NFL) + beta*mean(RCE); NFL detaching as in apl_nfl.json.",
  )
  return out


# ----------------------------------------------------------------------------------------------
# 10. PHuber


def gen_phuber(src):
  loss = src.load("phuber", "phuber/loss.py")

  def pthresh_case(p_thr, k, seed, name):
    """Rows with p_y at fixed multiples of the clipping probability (pairs share the label)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(rng.integers(0, k, 4), 2)
    mult = np.array([0.5, 1.5, 1 - 1e-6, 1 + 1e-6, 1 - 1e-3, 1 + 1e-3, 0.99, 1.01])
    ps = np.minimum(p_thr * mult, 0.999)
    logits = np.zeros((8, k))
    logits[np.arange(8), labels] = np.log(ps * (k - 1) / (1 - ps))  # softmax(...)_y == ps
    info = {
      "p_y_targets": ps.tolist(),
      "p_multiples_of_threshold": mult.tolist(),
      "threshold_p": p_thr,
      "recipe": f"labels=np.repeat(default_rng({seed}).integers(0,K,4),2); logits zero except "
      "logit_y = log(p(K-1)/(1-p)), p = threshold_p*mult",
    }
    return logits, labels, name, info

  settings = {"tau2": {"K": 10, "tau": 2.0}, "tau10": {"K": 10, "tau": 10.0}, "tau50_k100": {"K": 100, "tau": 50.0}}
  extra = {s: [pthresh_case(1 / hp["tau"], hp["K"], 70 + i, "threshold")] for i, (s, hp) in enumerate(settings.items())}
  out = {}
  out["phuber_ce"] = standard_fixture(
    src,
    "phuber",
    "phuber/loss.py",
    "PHuberCrossEntropy",
    settings,
    lambda s, hp: loss.PHuberCrossEntropy(tau=hp["tau"]),
    "UNOFFICIAL reproduction (ReScience 2021) of Menon et al. ICLR 2020; the authors released no code. "
    "p_y = softmax(z)_y (softmax then index, log taken of p, not log_softmax); if p_y <= 1/tau: "
    "loss = -tau*p_y + log(tau) + 1 else -log(p_y); mean. Continuous with continuous first derivative "
    "in p_y at 1/tau. conf/loss/phuber_ce.yaml default tau=10; README C10 uses tau=2; C100 tau 10/50.",
    extra_cases=extra,
  )
  g_settings = {"q0.7_tau10": {"K": 10, "q": 0.7, "tau": 10.0}, "q0.7_tau10_k100": {"K": 100, "q": 0.7, "tau": 10.0}}
  g_extra = {}
  for i, (s, hp) in enumerate(g_settings.items()):
    pth = hp["tau"] ** (1 / (hp["q"] - 1))
    g_extra[s] = [pthresh_case(pth, hp["K"], 80 + i, "threshold")]
  out["phuber_gce"] = standard_fixture(
    src,
    "phuber",
    "phuber/loss.py",
    "PHuberGeneralizedCrossEntropy",
    g_settings,
    lambda s, hp: loss.PHuberGeneralizedCrossEntropy(q=hp["q"], tau=hp["tau"]),
    "prob_thresh = tau**(1/(q-1)); boundary = tau*prob_thresh + (1-prob_thresh**q)/q; if p_y <= "
    "prob_thresh: loss = -tau*p_y + boundary else (1-p_y**q)/q; mean. No epsilon (unlike this repo's "
    "plain GCE which adds 1e-9 to p). conf/loss/phuber_gce.yaml: q=0.7, tau=10.",
    extra_cases=g_extra,
  )
  return out


# ----------------------------------------------------------------------------------------------
# 11. ELR


def gen_elr(src):
  holder = {}

  class ConfigParser:
    @staticmethod
    def get_instance():
      return holder["config"]

  loss = src.load(
    "elr", "ELR/model/loss.py", provide={"parse_config": stub_module("parse_config", ConfigParser=ConfigParser)}
  )
  settings = {
    "cifar10_sym": {"K": 10, "num_examp": 20, "beta": 0.7, "lambda": 3},
    "cifar10_asym": {"K": 10, "num_examp": 20, "beta": 0.9, "lambda": 1},
  }
  schedule = [list(range(0, 8)), list(range(4, 12)), list(range(0, 8))]
  cases = []
  for sname, hp in settings.items():
    for iname, scale, seed in [("normal", 3.0, 100), ("extreme", 15.0, 200)]:
      holder["config"] = {"train_loss": {"type": "elr_loss", "args": {"beta": hp["beta"], "lambda": hp["lambda"]}}}
      prev = torch.get_default_dtype()
      torch.set_default_dtype(torch.float64)  # so the code's torch.zeros(num_examp, K) memory is float64
      try:
        m = loss.elr_loss(num_examp=hp["num_examp"], num_classes=hp["K"], beta=hp["beta"])
      finally:
        torch.set_default_dtype(prev)
      assert m.target.dtype == torch.float64
      rng = np.random.default_rng(seed)
      example_labels = rng.integers(0, hp["K"], hp["num_examp"])
      calls = []
      for idx in schedule:
        logits = scale * rng.standard_normal((len(idx), hp["K"]))
        labels = example_labels[idx]
        z = t64(logits, grad=True)
        l = m(idx, z, tlab(labels))  # trainer passes indexs.cpu().numpy().tolist(): a Python list
        (g,) = torch.autograd.grad(l, z)
        calls.append(
          {
            "indices": idx,
            "logits": flist(logits),
            "labels": labels.tolist(),
            "loss": float(l.detach()),
            "grad_mean": flist(g),
            "target_memory_after": flist(m.target.detach()),
          }
        )
      cases.append(
        {
          "name": f"{sname}/{iname}",
          "hparams_name": sname,
          "hparams": hp,
          "recipe": f"rng=default_rng({seed}); example_labels=rng.integers(0,K,num_examp); "
          f"then per call logits={scale}*rng.standard_normal((8,K)); labels=example_labels[indices]",
          "example_labels": example_labels.tolist(),
          "initial_target_memory": "zeros(num_examp, K)",
          "calls": calls,
        }
      )
  fx = {
    "repo": REPOS["elr"][0],
    "commit": src.commit("elr"),
    "file": "ELR/model/loss.py",
    "file_blob_sha": {"ELR/model/loss.py": src.blob("elr", "ELR/model/loss.py")},
    "symbol": "elr_loss",
    "torch_version": torch.__version__,
    "dtype": "float64",
    "hparams": settings,
    "cases": cases,
    "notes": "STATEFUL: target memory t [num_examp, K] starts at zeros. forward(index, output, label): "
    "p = softmax(z).clamp(1e-4, 1-1e-4); pd = p.detach(); t[index] = beta*t[index] + "
    "(1-beta)*pd/pd.sum(1) (update happens BEFORE the loss, and the loss uses the UPDATED t); "
    "loss = F.cross_entropy(z, y) (mean, unclamped) + lambda*mean_i log(1 - sum_k t_ik*p_ik) "
    "(p clamped, so the clamp zeroes gradient of p_ik outside [1e-4, 1-1e-4]; t is a constant). "
    'lambda is read from the global config (ConfigParser.get_instance()["train_loss"]["args"]'
    '["lambda"]), beta from the constructor. The code allocates t with torch.zeros -> default '
    "dtype; here the default dtype was float64 while constructing, so t is float64 (in "
    "normal use it is float32). Configs: config_cifar10.json beta 0.7 lambda 3; "
    "config_cifar10_asym.json beta 0.9 lambda 1; config_cifar100.json beta 0.9 lambda 7. "
    "Calls use indices [0..7], [4..11] (overlap 4..7), [0..7].",
    "generator": "scripts/make_official_fixtures.py",
  }
  return {"elr": fx}


# ----------------------------------------------------------------------------------------------
# 12. Sparse regularisation


def gen_sr(src):
  losses = src.load("sr", "losses.py")
  config = src.load("sr", "config.py", provide={"losses": losses})
  norm = src.load("sr", "norm.py")
  main_src = src.text("sr", "main.py")
  tree = ast.parse(main_src)
  fdef = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "calculate_loss"][0]
  fsrc = ast.get_source_segment(main_src, fdef)

  def make_calc(dataset):
    ns = {"F": F, "args": types.SimpleNamespace(is_sparse=True, dataset=dataset)}
    exec(compile(fsrc, "lnl_sr/main.py:calculate_loss", "exec"), ns)
    return ns["calculate_loss"]

  def lamb_after(l0, rho, freq, epochs_done):
    lamb = l0
    for ep in range(epochs_done):  # main.py: `if (ep + 1) % freq == 0: lamb = lamb * rho`
      if (ep + 1) % freq == 0:
        lamb = lamb * rho
    return lamb

  c10 = config.CIFAR10_params["CE+SR"]
  c100 = config.CIFAR100_params["CE+SR"]
  settings = {
    "cifar10_ce_epoch0": {
      "K": 10,
      "loss": "CE",
      "dataset": "CIFAR10",
      "tau": c10[0],
      "p": c10[1],
      "lamb": c10[2],
      "rho": c10[3],
      "freq": c10[4],
      "epoch": 0,
    },
    "cifar10_ce_epoch50": {
      "K": 10,
      "loss": "CE",
      "dataset": "CIFAR10",
      "tau": c10[0],
      "p": c10[1],
      "lamb": lamb_after(c10[2], c10[3], c10[4], 50),
      "rho": c10[3],
      "freq": c10[4],
      "epoch": 50,
    },
    "cifar10_gce_epoch0": {
      "K": 10,
      "loss": "GCE",
      "gce_q": config.CIFAR10_CONFIG["GCE"].q,
      "dataset": "CIFAR10",
      "tau": config.CIFAR10_params["GCE+SR"][0],
      "p": config.CIFAR10_params["GCE+SR"][1],
      "lamb": config.CIFAR10_params["GCE+SR"][2],
      "rho": config.CIFAR10_params["GCE+SR"][3],
      "freq": 1,
      "epoch": 0,
    },
    "cifar10_fl_epoch0": {
      "K": 10,
      "loss": "FL",
      "dataset": "CIFAR10",
      "tau": c10[0],
      "p": c10[1],
      "lamb": c10[2],
      "rho": c10[3],
      "freq": 1,
      "epoch": 0,
    },
    "cifar100_ce_sym_epoch0": {
      "K": 100,
      "loss": "CE",
      "dataset": "CIFAR100",
      "tau": c100[0],
      "p": c100[1],
      "lamb": 4,
      "lamb_config_table": c100[2],
      "rho": c100[3],
      "freq": c100[4],
      "epoch": 0,
    },
    "cifar100_ce_asym_epoch0": {
      "K": 100,
      "loss": "CE",
      "dataset": "CIFAR100",
      "tau": c100[0],
      "p": c100[1],
      "lamb": 10,
      "rho": c100[3],
      "freq": c100[4],
      "epoch": 0,
    },
  }
  crit = {"CIFAR10": config.CIFAR10_CONFIG, "CIFAR100": config.CIFAR100_CONFIG}

  def make(s, hp):
    calc = make_calc(hp["dataset"])
    criterion = crit[hp["dataset"]][hp["loss"]]
    pn = norm.pNorm(hp["p"])
    return lambda z, y: calc(criterion, z, y, pn, hp["lamb"], hp["tau"], hp["p"])

  fx = standard_fixture(
    src,
    "sr",
    ["main.py", "norm.py", "config.py", "losses.py"],
    "main.py:calculate_loss (extracted with ast and exec-ed unchanged) + norm.pNorm",
    settings,
    make,
    "calculate_loss with args.is_sparse=True: for non-MNIST datasets out = F.normalize(out, dim=1) "
    "(z/max(||z||_2, 1e-12)); loss = criterion(out/tau, y) + lamb * pNorm(out/tau, p); pNorm: "
    "P = softmax(.).clamp(1e-7, 1); mean_i sum_k P_ik**p. criterion: CE = nn.CrossEntropyLoss(); "
    "GCE = losses.GCELoss(q=0.01 for CIFAR10 in config.py, p clamped [1e-7,1]); FL = FocalLoss(gamma=0.5, "
    "pt detached). lambda schedule (main.py): lamb starts at lambda0 and after each epoch ep "
    "(0-based) with (ep+1) % freq == 0 it becomes lamb*rho, so epoch e trains with "
    "lambda0*rho**floor(e/freq) (computed here by the same repeated multiplication). CIFAR100: main.py "
    "OVERRIDES the table lambda0=10 with `lamb = 10 if asymm else 4` (symmetric uses 4). REPO BUG: "
    "main.py never defines `epochs` for CIFAR10 (CosineAnnealingLR(T_max=epochs) would raise NameError); "
    "the paper uses 120.",
    extra_top={
      "params_tables": {
        "CIFAR10_params": config.CIFAR10_params,
        "CIFAR100_params": config.CIFAR100_params,
        "MNIST_params": config.MNIST_params,
        "tuple_order": "(tau, p, lambda0, rho, freq)",
      }
    },
  )
  return {"sr": fx}


# ----------------------------------------------------------------------------------------------
# 13. LDR-KL official


def gen_ldr(src):
  loss = src.load("ldr", "loss.py")
  jal = src.load("jal", "losses.py")
  settings = {
    "lambda10_margin0.1": {"K": 10, "threshold": 0.1, "Lambda": 10.0},
    "lambda1_margin0.1": {"K": 10, "threshold": 0.1, "Lambda": 1.0},
    "lambda1_margin0.1_k100": {"K": 100, "threshold": 0.1, "Lambda": 1.0},
  }

  def make(s, hp):
    m = loss.LDRLoss_V1(threshold=hp["threshold"], Lambda=hp["Lambda"])
    return lambda z, y: m(z, F.one_hot(y, hp["K"]))  # experiment.py passes torch one_hot (int64)

  fx = standard_fixture(
    src,
    "ldr",
    "loss.py",
    "LDRLoss_V1",
    settings,
    make,
    "Official (Optimization-AI/ICML2023_LDR). forward(y_pred, y_true) takes ONE-HOT y_true (experiment.py "
    "passes F.one_hot(labels, K), int64). s = softplus(z); s = s/mean_k s; d = threshold*(1-y) + s - "
    "sum_k(s*y); d = d/Lambda; m = max(d).detach(); loss = Lambda*(log mean_k exp(d-m) + m); mean. "
    "threshold*(1-y_true) with int64 y_true gives a float32 (default dtype) tensor, so threshold 0.1 "
    "acts as float32(0.1) = 0.10000000149011612. "
    "experiment.py: --margin default 0.1 -> threshold, Lambda from parameter_set [10] (the class "
    "default threshold=2.0 is NOT used). The JAL/eps-softmax LDRLoss_V1 is the same math with "
    "integer labels (checked: see jal_equal_max_abs_diff).",
  )
  # cross-check with the JAL vendored copy
  diffs = []
  for c in fx["cases"]:
    hp = c["hparams"]
    m = jal.LDRLoss_V1(threshold=hp["threshold"], Lambda=hp["Lambda"])
    z = t64(c["logits"], grad=True)
    l = m(z, tlab(c["labels"]))
    (g,) = torch.autograd.grad(l, z)
    diffs.append(max(abs(float(l.detach()) - c["mean"]), float(np.max(np.abs(g.numpy() - np.array(c["grad_mean"]))))))
  fx["jal_equal_max_abs_diff"] = max(diffs)
  return {"ldr_kl": fx}


# ----------------------------------------------------------------------------------------------
# 14. OGC (optimized gradient clipping, AAAI'25): the per-batch loss and the threshold search

OGC_ARGS = {  # every shipped script (script/*/ogc_*.sh)
  "epsilon": 20.0,
  "time_frame_s": 32,
  "queue_size_q": 4096,
  "binary_search_tol": 1e-7,
  "binary_search_max_iter": 10,
}
OGC_BASES = {"ce": ("OGC_CE", {}), "fl": ("OGC_FL", {"gamma": 0.5}), "gce": ("OGC_GCE", {"q": 0.7})}
OGC_FIT_SEED = 1  # np.random.seed before each fit: main.py seeds NumPy's global RNG, which sklearn's k-means uses


def load_ogc(src):
  """methods/losses_ogc.py imports `.tools` relatively: both files are loaded as modules of one synthetic
  package (the repository's methods/__init__.py is not run: it imports every other loss of the repo)."""
  pkg = "official_ogc_methods"
  paths = {name: src.extract("ogc", f"methods/{name}.py") for name in ("tools", "losses_ogc")}
  package = types.ModuleType(pkg)
  package.__path__ = [os.path.dirname(paths["tools"])]
  sys.modules[pkg] = package
  for name, path in paths.items():
    spec = importlib.util.spec_from_file_location(f"{pkg}.{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
  return sys.modules[f"{pkg}.tools"], sys.modules[f"{pkg}.losses_ogc"]


def ogc_instance(losses_ogc, base, time_frame_s=OGC_ARGS["time_frame_s"]):
  cls, extra = OGC_BASES[base]
  return getattr(losses_ogc, cls)(**{**OGC_ARGS, "time_frame_s": time_frame_s}, **extra)


def set_ogc_threshold(m, t):
  """The state get_tau_t leaves: prob_thr_t = t and tau_t = |mapping_p_to_grad(torch.tensor(t))| (float32)."""
  m.prob_thr_t = t
  m.tau_t = m.mapping_p_to_grad(torch.tensor(t)).abs().item()


def ogc_queue(name):
  """Fixed queues of 4096 CE losses (rounded to 6 significant digits, clipped to the official range)."""
  rng = np.random.default_rng({"sym50": 40, "noise20": 41, "unimodal": 42, "overlap": 43, "noise5_far": 44}[name])
  n = 4096
  if name == "unimodal":
    x = rng.exponential(0.5, n)
  else:
    share, clean_scale, noisy_mean, noisy_std = {
      "sym50": (0.5, 0.1, 3.0, 1.0),
      "noise20": (0.2, 0.2, 2.5, 0.8),
      "overlap": (0.4, 0.5, 1.5, 0.6),
      "noise5_far": (0.05, 0.05, 6.0, 1.0),
    }[name]
    n_noisy = int(share * n)
    x = np.concatenate([rng.exponential(clean_scale, n - n_noisy), rng.normal(noisy_mean, noisy_std, n_noisy)])
    x = rng.permutation(x)
  x = np.clip(x, -math.log(1 - 1e-7), -math.log(1e-7))
  return np.array([float(f"{v:.6g}") for v in x])


OGC_QUEUE_RECIPE = {
  "sym50": "rng=default_rng(40); 2048 exponential(0.1) + 2048 normal(3.0, 1.0), permuted",
  "noise20": "rng=default_rng(41); 3277 exponential(0.2) + 819 normal(2.5, 0.8), permuted",
  "unimodal": "rng=default_rng(42); 4096 exponential(0.5)",
  "overlap": "rng=default_rng(43); 2458 exponential(0.5) + 1638 normal(1.5, 0.6), permuted",
  "noise5_far": "rng=default_rng(44); 3892 exponential(0.05) + 204 normal(6.0, 1.0), permuted",
}
OGC_QUEUE_NOTE = (
  "n_noisy = int(share * 4096); then clipped to [-log(1-1e-7), -log(1e-7)] and rounded to 6 significant "
  "digits (float(f'{v:.6g}')); the official code ran on exactly these values"
)


def sklearn_em_from_kmeans(x, seed):
  """What GaussianMixture(2, max_iter=10, reg_covar=1e-3).fit does, written out in float64 from the k-means
  labels sklearn draws with the same global seed: checks that the initial split is the only random part."""
  from sklearn.cluster import KMeans

  np.random.seed(seed)
  labels = KMeans(n_clusters=2, n_init=1, random_state=np.random.mtrand._rand).fit(x[:, None]).labels_
  resp = np.eye(2)[labels]

  def params(resp):
    nk = resp.sum(0) + 10 * np.finfo(np.float64).eps
    means = resp.T @ x / nk
    var = np.array([(resp[:, k] * (x - means[k])) @ (x - means[k]) / nk[k] for k in range(2)]) + 1e-3
    return nk, means, var

  nk, means, var = params(resp)
  weights = nk / len(x)
  bound, changes = -np.inf, []
  for _ in range(10):
    joint = -0.5 * (np.log(2 * np.pi) + (x[:, None] - means) ** 2 / var) - 0.5 * np.log(var) + np.log(weights)
    top = joint.max(1, keepdims=True)
    norm = top + np.log(np.exp(joint - top).sum(1, keepdims=True))
    new_bound = norm.mean()
    nk, means, var = params(np.exp(joint - norm))
    weights = nk / nk.sum()
    change = float(new_bound - bound)
    changes.append(change if math.isfinite(change) else None)  # the first change is from -inf
    bound = new_bound
    if abs(change) < 1e-3:
      break
  low = int(np.argmin(means))
  lower = labels == labels[np.argmin(x)]
  return {
    "kmeans_lower_count": int(lower.sum()),
    "kmeans_lower_max": float(x[lower].max()),
    "em_iterations": len(changes),
    "lower_bound_changes": changes,
    "means": means[[low, 1 - low]].tolist(),
    "covariances": var[[low, 1 - low]].tolist(),
    "weights": weights[[low, 1 - low]].tolist(),
  }


def gen_ogc(src):
  tools, losses_ogc = load_ogc(src)
  commit = src.commit("ogc")
  files = ["methods/losses_ogc.py", "methods/tools.py"]
  blobs = {f: src.blob("ogc", f) for f in files}
  out = {}

  # --- the per-batch loss at fixed thresholds
  def p_threshold_case(t, k, seed):
    """Rows with p_y at fixed multiples of t (pairs share the label): the value jump at t shows."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(rng.integers(0, k, 4), 2)
    mult = np.array([0.5, 1.5, 1 - 1e-6, 1 + 1e-6, 1 - 1e-3, 1 + 1e-3, 0.99, 1.01])
    ps = np.minimum(t * mult, 0.999)
    logits = np.zeros((8, k))
    logits[np.arange(8), labels] = np.log(ps * (k - 1) / (1 - ps))  # softmax(...)_y == ps
    info = {
      "p_y_targets": ps.tolist(),
      "p_multiples_of_threshold": mult.tolist(),
      "recipe": f"labels=np.repeat(default_rng({seed}).integers(0,K,4),2); logits zero except "
      "logit_y = log(p(K-1)/(1-p)), p = threshold*mult",
    }
    return logits, labels, "threshold", info

  for base, (cls, extra) in OGC_BASES.items():
    settings = {}
    for t in (1e-7, 0.1, 0.5, 0.9):
      settings[f"t{t:g}"] = {"K": 10, "threshold": t, **extra}
    settings["t0.05_k100"] = {"K": 100, "threshold": 0.05, **extra}

    def make(s, hp, base=base):
      # time_frame_s huge: the threshold never refits during these calls; it is set as get_tau_t sets it.
      m = ogc_instance(losses_ogc, base, time_frame_s=10**12)
      set_ogc_threshold(m, hp["threshold"])
      return lambda z, y: m(pred=z, labels=y, lr=0.1)

    extra_cases = {"t0.5": [p_threshold_case(0.5, 10, 90 + len(out))]}
    out[f"ogc_{base}"] = standard_fixture(
      src,
      "ogc",
      files,
      f"methods/losses_ogc.py:{cls}.forward at a fixed threshold",
      settings,
      make,
      "p = softmax(z).clamp(1e-7, 1-1e-7)[y]; tau = |L'(t)| computed from torch.tensor(t) (float32) and "
      "L(t) likewise float32; loss = 1 - tau*p + L(t) if p <= t else L(p); batch mean. The instance is "
      f"built with the scripts' arguments {OGC_ARGS} except time_frame_s=1e12, so no refit happens, and its "
      "state is set as get_tau_t sets it: prob_thr_t = t, tau_t = |mapping_p_to_grad(torch.tensor(t))|. "
      "The value below t is 1 - tau*p + L(t): continuous at t for CE (tau*t = 1 up to float32) but jumping by "
      "1 - tau*t for FL/GCE (the 'threshold' case puts p_y at multiples of t). FL's modulator is not detached.",
      extra_cases=extra_cases,
      extra_top={"official_args": {**OGC_ARGS, **extra}},
    )

  # --- the threshold search: (a) on fixed mixture parameters, (b) after fit_gmm on fixed queues
  mixtures = {
    "m1": ((0.2, 0.05), (2.5, 0.8)),
    "m2": ((0.5, 0.2), (3.0, 1.0)),
    "m3": ((0.05, 0.01), (4.0, 2.0)),
    "m4": ((0.3, 0.1), (1.5, 0.5)),
    "m5": ((0.02, 0.002), (8.0, 4.0)),
    "m6": ((1.0, 0.5), (1.2, 0.6)),
  }
  real_fit, real_search = losses_ogc.fit_gmm, losses_ogc.binary_search
  search_cases = []
  for mname, (clean, noisy) in mixtures.items():
    for base in OGC_BASES:
      for lr in (0.1, 0.01, 0.001):
        m = ogc_instance(losses_ogc, base)
        m.queue_H.extend([0.0] * OGC_ARGS["queue_size_q"])  # full, so get_tau_t searches; values unused below
        m.lr_t = lr
        trace = []

        def traced(x_min, x_max, func, *args, trace=trace, **kwargs):
          def recorded(x):
            r = func(x)
            trace.append([float(x), float(r)])
            return r

          return real_search(x_min, x_max, recorded, *args, **kwargs)

        losses_ogc.fit_gmm = lambda X, clean=clean, noisy=noisy: (clean[0], clean[1], noisy[0], noisy[1])
        losses_ogc.binary_search = traced
        try:
          t, tau = m.get_tau_t()
        finally:
          losses_ogc.fit_gmm, losses_ogc.binary_search = real_fit, real_search
        search_cases.append(
          {
            "name": f"{mname}/{base}/lr{lr:g}",
            "base": base,
            "hparams": OGC_BASES[base][1],
            "clean": {"mean": clean[0], "covariance": clean[1]},
            "noisy": {"mean": noisy[0], "covariance": noisy[1]},
            "lr": lr,
            "target": 1 + lr * OGC_ARGS["epsilon"],
            "threshold": float(t),
            "tau": float(tau),
            "ratio_calls": trace,
          }
        )
  fit_cases = []
  for qname in OGC_QUEUE_RECIPE:
    x = ogc_queue(qname)
    np.random.seed(OGC_FIT_SEED)
    mc, vc, mn, vn = tools.fit_gmm(x.reshape(-1, 1))
    reproduced = sklearn_em_from_kmeans(x, OGC_FIT_SEED)
    official = [float(mc), float(mn)], [float(vc), float(vn)]
    diff = max(
      np.max(np.abs(np.array(reproduced["means"]) - official[0])),
      np.max(np.abs(np.array(reproduced["covariances"]) - official[1])),
    )
    thresholds = {}
    for base in OGC_BASES:
      for lr in (0.1, 0.01):
        m = ogc_instance(losses_ogc, base)
        m.queue_H.extend(x.tolist())
        m.lr_t = lr
        np.random.seed(OGC_FIT_SEED)
        t, tau = m.get_tau_t()
        assert abs(m.info["mean_clean"] - mc) < 1e-12  # the same fit as above
        thresholds[f"{base}/lr{lr:g}"] = {"threshold": float(t), "tau": float(tau)}
    fit_cases.append(
      {
        "name": qname,
        "recipe": OGC_QUEUE_RECIPE[qname],
        "queue": x.tolist(),
        "fit_gmm": {"means": official[0], "covariances": official[1]},
        "sklearn_steps": reproduced,
        "sklearn_steps_max_abs_diff": float(diff),
        "get_tau_t": thresholds,
      }
    )
  import scipy
  import sklearn

  out["ogc_threshold"] = {
    "repo": REPOS["ogc"][0],
    "commit": commit,
    "file": files,
    "file_blob_sha": blobs,
    "symbol": "methods/losses_ogc.py:OptimizedGradientClippingBase.get_tau_t (+ calc_grad_ratio), "
    "methods/tools.py:fit_gmm, binary_search",
    "torch_version": torch.__version__,
    "sklearn_version": sklearn.__version__,
    "scipy_version": scipy.__version__,
    "dtype": "float64",
    "official_args": OGC_ARGS,
    "search_cases": search_cases,
    "fit_cases": fit_cases,
    "fit_seed": OGC_FIT_SEED,
    "queue_note": OGC_QUEUE_NOTE,
    "notes": "search_cases: get_tau_t with fit_gmm replaced in the module's namespace by a function returning the "
    "given (mean, covariance) of the clean and noisy component, so the official truncated-normal densities, "
    "calc_grad_ratio and binary_search run unchanged; ratio_calls lists every (x, ratio(x)) binary_search "
    "evaluated, in order (x_max, x_min, then the midpoints), so each bisection decision's margin |target - "
    "ratio| is on record. fit_cases: the official fit_gmm (sklearn GaussianMixture(2, max_iter=10, "
    "reg_covar=1e-3), k-means init drawn from NumPy's global RNG, seeded with fit_seed before each call) on "
    "a fixed queue, and get_tau_t with the real fit_gmm (same seed) at lr 0.1 and 0.01. sklearn_steps "
    "re-derives the fit in float64 from the k-means labels drawn with the same seed (kmeans_lower_count / "
    "kmeans_lower_max: the initial lower cluster); sklearn_steps_max_abs_diff shows it is the fit_gmm "
    "result, so the k-means split is the only random part.",
    "generator": "scripts/make_official_fixtures.py",
  }
  return out


# ----------------------------------------------------------------------------------------------


def _is_num(x):
  return isinstance(x, (int, float)) and not isinstance(x, bool)


def to_json(obj, ind=0):
  """JSON with dicts indented, numeric vectors on one line and matrices one row per line.

  Floats use Python's repr (shortest string that round-trips to the same float64)."""
  pad, pad1 = " " * ind, " " * (ind + 1)
  if isinstance(obj, dict):
    if not obj:
      return "{}"
    items = [f"{pad1}{json.dumps(str(k))}: {to_json(v, ind + 1)}" for k, v in obj.items()]
    return "{\n" + ",\n".join(items) + "\n" + pad + "}"
  if isinstance(obj, list):
    if all(_is_num(x) for x in obj):
      return json.dumps(obj, allow_nan=False)
    if all(isinstance(x, list) and all(_is_num(v) for v in x) for x in obj):
      return "[\n" + ",\n".join(pad1 + json.dumps(x, allow_nan=False) for x in obj) + "\n" + pad + "]"
    return "[\n" + ",\n".join(pad1 + to_json(x, ind + 1) for x in obj) + "\n" + pad + "]"
  return json.dumps(obj, allow_nan=False)


def main():
  here = os.path.dirname(os.path.abspath(__file__))
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--mirror-root", default="/work/.mirror")
  ap.add_argument("--out", default=os.path.join(here, "..", "tests", "fixtures", "official"))
  ap.add_argument("--src", default="/tmp/official_src", help="where extracted official files are written")
  ap.add_argument(
    "--only", nargs="*", help="generator names (anl alfs jal eps logitclip gjs taylor nls apl phuber elr sr ldr ogc)"
  )
  a = ap.parse_args()
  torch.set_num_threads(1)
  torch.manual_seed(0)
  src = Sources(a.mirror_root, a.src)
  gens = {
    "anl": gen_anl,
    "alfs": gen_alfs,
    "jal": gen_jal,
    "eps": gen_eps,
    "logitclip": gen_logitclip,
    "gjs": gen_gjs,
    "taylor": gen_taylor,
    "nls": gen_nls,
    "apl": gen_apl,
    "phuber": gen_phuber,
    "elr": gen_elr,
    "sr": gen_sr,
    "ldr": gen_ldr,
    "ogc": gen_ogc,
  }
  os.makedirs(a.out, exist_ok=True)
  written = []
  for name, gen in gens.items():
    if a.only and name not in a.only:
      continue
    for short, fx in gen(src).items():
      path = os.path.join(a.out, short + ".json")
      with open(path, "w") as f:
        f.write(to_json(fx) + "\n")
      written.append(path)
      counts = {k: len(v) for k, v in fx.items() if k.endswith("cases") and isinstance(v, list)}
      print("wrote", os.path.relpath(path), ", ".join(f"{n} {k}" for k, n in counts.items()))
  for w in src.head_warnings:
    print("WARNING", w)


if __name__ == "__main__":
  main()
