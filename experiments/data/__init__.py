"""The data layer: datasets, their sources, and the feeds that put batches on the devices.

The trainer hands it the `config.data` sub-dict whole and sees only what this module exports:

  * `validate(cfg)`: checks that need no data (before anything is loaded or compiled);
  * `load(cfg, seed=...)` -> `Data` (labels, image sources, normalisation, augmentation);
  * `hold_out(data, train_idx, val_idx)` -> `Data` with a validation split taken from its training set;
  * `train_feed(...)` -> a `Feed`, and `eval_set(...)`: batches on the devices, whichever the input mode.

A new dataset format touches this package alone: a spec in specs.py and a reader beside the others.
"""

from experiments.data.augment import augment, augment_batch, augment_views, normalize
from experiments.data.datasets import Data, Split, hold_out, input_mode, load, train_images_bytes
from experiments.data.feeds import EvalSet, Feed, eval_set, train_feed
from experiments.data.specs import AUGMENTATIONS, DATASETS, INPUT_MODES, SPECS, validate

__all__ = [
  "AUGMENTATIONS",
  "DATASETS",
  "Data",
  "EvalSet",
  "Feed",
  "INPUT_MODES",
  "SPECS",
  "Split",
  "augment",
  "augment_batch",
  "augment_views",
  "eval_set",
  "hold_out",
  "input_mode",
  "load",
  "normalize",
  "train_feed",
  "train_images_bytes",
  "validate",
]
