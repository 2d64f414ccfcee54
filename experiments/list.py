"""What the experiment CLIs accept, from the command line.

  python -m experiments.list losses|models|datasets|configs|noise

losses: every registered loss with its hyperparameters and defaults (set them with --config.loss.<name>=);
models: the model names (--config.model=, 'auto' picks by input size); datasets: --config.data.name= values
with their default augmentation; configs: the training and sweep config files; noise: --config.noise.kind=.
"""

from __future__ import annotations

import ast
import glob
import inspect
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WHAT = ("losses", "models", "datasets", "configs", "noise")


def _first_line(doc: str | None) -> str:
  return (doc or "").strip().split("\n")[0]


def losses() -> list[str]:
  import robust_losses
  from robust_losses import registry

  out = []
  for name in robust_losses.names():
    defaults = registry._hparam_defaults(name)
    hp = ", ".join(
      f"{k}" if v is inspect.Parameter.empty else f"{k}={v!r}" for k, v in defaults.items() if k != "label_smoothing"
    )
    out.append(f"{name}({hp})  {_first_line(registry._entry(name).fn.__doc__)}")
  return out


def models() -> list[str]:
  from experiments import models as m

  rule = _first_line(m.default_for.__doc__)
  return ["auto  " + rule] + [f"{name}  (inputs >= {m.MIN_SIZE[name]} px)" for name in m.names()]


def datasets() -> list[str]:
  from experiments.data import specs

  out = []
  for name, spec in specs.SPECS.items():
    crop = (
      "crop pad image_size/8"
      if spec.crop_pad is None
      else ("no crop" if spec.crop_pad == 0 else f"crop pad {spec.crop_pad}")
    )
    out.append(f"{name}  ({spec.kind}; default augmentation: {crop}, {'flip' if spec.flip else 'no flip'})")
  out.append(f"data.augment: one of {list(specs.AUGMENTATIONS)} ('default' = the dataset's, as above)")
  return out


def configs() -> list[str]:
  out = []
  for path in sorted(glob.glob(os.path.join(REPO, "configs", "*.py"))) + sorted(
    glob.glob(os.path.join(REPO, "configs", "sweeps", "*.py"))
  ):
    if os.path.basename(path).startswith("_"):
      continue
    with open(path) as f:
      doc = ast.get_docstring(ast.parse(f.read()))
    cli = "sweep" if os.sep + "sweeps" + os.sep in path else "train"
    out.append(f"{os.path.relpath(path, REPO)}  [{cli}]  {_first_line(doc)}")
  return out


def noise() -> list[str]:
  from experiments import noise as n

  return [f"{k}" for k in n.KINDS]


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  if len(argv) != 1 or argv[0] not in WHAT:
    print(f"usage: python -m experiments.list {{{'|'.join(WHAT)}}}\n{__doc__.strip()}", file=sys.stderr)
    return 2
  print("\n".join(globals()[argv[0]]()))
  return 0


if __name__ == "__main__":
  sys.exit(main())
