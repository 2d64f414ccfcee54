"""On-device preprocessing of uint8 images: random crop and flip (training), then normalisation.

Random crop and flip run inside the compiled step, keyed by the example's position in the global batch,
so both feeds (device-resident and streamed) augment identically on any number of devices. A loss that
takes M views of each example (GJS) gets M independent augmentations of each image (`augment_views`).
"""

from __future__ import annotations

import dm_pix
import jax
import jax.numpy as jnp

from experiments.data.statistics import MIN_STD


def augment(key, image, *, crop_pad: int, flip: bool):
  """One image [H, W, C]: random crop after zero padding `crop_pad` (black, as torchvision's
  RandomCrop(padding=...)), then a random horizontal flip. Keeps the dtype; identity when neither is on."""
  crop_key, flip_key = jax.random.split(key)
  if crop_pad:
    padded = jnp.pad(image, ((crop_pad, crop_pad), (crop_pad, crop_pad), (0, 0)))
    image = dm_pix.random_crop(crop_key, padded, image.shape)
  if flip:
    image = dm_pix.random_flip_left_right(flip_key, image)
  return image


def augment_batch(keys, images, *, crop_pad: int, flip: bool):
  """`augment` of every image of a batch [B, H, W, C], each with its own key [B]."""
  return jax.vmap(lambda k, im: augment(k, im, crop_pad=crop_pad, flip=flip))(keys, images)


def augment_views(keys, images, *, num_views: int, crop_pad: int, flip: bool):
  """`num_views` independently augmented copies of a batch [B, H, W, C], stacked as [M, B, H, W, C].

  View 0 is `augment_batch` with `keys` itself (the single-view augmentation: one view is exactly today's
  batch); view v > 0 uses fold_in(key, v) of each example's key, so a view's randomness is a function of
  the example's key and the view index alone (hence of the global example position and step, like the
  single view). With neither crop nor flip the views would be identical copies: an error.
  """
  if num_views < 1:
    raise ValueError(f"num_views={num_views} is out of range; valid range is >= 1")
  if num_views > 1 and not (crop_pad or flip):
    raise ValueError(
      f"num_views={num_views} augmented views need an augmentation, but crop_pad=0 and flip=False would make "
      "every view the same image"
    )
  views = [augment_batch(keys, images, crop_pad=crop_pad, flip=flip)]
  for v in range(1, num_views):
    view_keys = jax.vmap(lambda k: jax.random.fold_in(k, v))(keys)
    views.append(augment_batch(view_keys, images, crop_pad=crop_pad, flip=flip))
  return jnp.stack(views)


def normalize(images, mean, std, dtype=jnp.float32):
  """(images / 255 - mean) / std per channel, computed in float32 and returned as `dtype`.

  The std is floored at MIN_STD, as the loader does, so a zero std from elsewhere cannot give inf/NaN.
  """
  x = jnp.asarray(images, jnp.float32) / 255.0
  x = (x - jnp.asarray(mean, jnp.float32)) / jnp.maximum(jnp.asarray(std, jnp.float32), MIN_STD)
  return x.astype(dtype)
