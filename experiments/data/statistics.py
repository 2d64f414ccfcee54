"""Per-channel mean and std of the training images, the normalisation every model input gets."""

from __future__ import annotations

import jax
import numpy as np

from experiments.data import sources

# Floor of the per-channel std (of x / 255): one grey level. A constant channel has std 0, and dividing
# by it would feed inf/NaN to the model, which surfaces much later as a diverging loss.
MIN_STD = 1 / 255


def channel_mean_std(x, *, where="x_train"):
  """Per-channel mean and std of x / 255; the std is floored at MIN_STD (a warning names the channel).

  `x` is a uint8 array [..., C] or an iterable of them (blocks of a streamed set, never all in memory).
  Accumulated over chunks: np.std would build a float64 copy of the whole set (8 GB for
  mini-ImageNet). Sums of squared uint8 values stay exact in float64 up to ~1e11 pixels, so the result
  does not depend on how the images are split into blocks.
  """
  total = total_sq = count = 0
  for block in [x] if isinstance(x, np.ndarray) else x:
    pixels = block.reshape(-1, block.shape[-1])
    count += len(pixels)
    for start in range(0, len(pixels), 1 << 20):
      chunk = pixels[start : start + (1 << 20)].astype(np.float64)
      total = total + chunk.sum(0)
      total_sq = total_sq + np.square(chunk).sum(0)
  mean = total / count
  std = np.sqrt(np.maximum(total_sq / count - mean**2, 0))
  floor = MIN_STD * 255  # in grey levels, the units of std here
  for c in np.flatnonzero(std < floor):
    if jax.process_index() == 0:
      state = "constant" if std[c] == 0 else f"nearly constant (std {std[c]:.3g} grey levels)"
      print(
        f"Warning: {where} channel {c} is {state}; its std is floored at 1/255 (one grey level) "
        "so normalised inputs stay finite"
      )
  std = np.maximum(std, floor)
  return tuple(float(m) for m in mean / 255), tuple(float(s) for s in std / 255)


def source_mean_std(source, max_examples: int, seed: int, workers: int = 0, *, where: str):
  """channel_mean_std over every image of a source, or over a seeded sample of `max_examples` when there
  are more: a streamed run cannot afford a pass over 1M images. Images in memory always use every one."""
  if isinstance(source, sources.ArraySource):
    return channel_mean_std(source.images, where=where)
  n = len(source)
  idx = (
    np.arange(n) if n <= max_examples else np.sort(np.random.default_rng(seed).choice(n, max_examples, replace=False))
  )
  blocks = (sources.read(source, idx[a : a + 512], workers) for a in range(0, len(idx), 512))  # a block at a time
  return channel_mean_std(blocks, where=where)
