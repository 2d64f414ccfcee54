"""Image datasets as users keep them on disk: class folders, or list files of `path label` lines.

Two layouts are read into a `FileList` (paths + int labels), which `load_images` decodes into uint8 arrays
(or a streaming pipeline decodes one `decode` call at a time):

  * a folder tree `DIR/{train,test[,val]}/<class>/<image>`, the torchvision ImageFolder convention
    (`scan_image_folder`);
  * a list file of `path label` lines, as Clothing1M, WebVision and Food-101N-style releases ship them
    (`read_list_file`).

Every problem with the files raises `ImageFileError` (a ValueError) naming the folder or file, and the
line for list files, so a wrong path is fixed from the message alone.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import re

import numpy as np
from PIL import Image, ImageFile, ImageOps

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
SPLITS = ("train", "test", "val")  # folder names scan_image_folder looks for; train and test are required

_SHOW = 5  # how many offending names a message lists before "and N more"
_CHUNK = 64  # files per thread task: few enough futures for 1M-image lists, small enough to balance


@dataclasses.dataclass(frozen=True, eq=False)  # eq=False: `==` on array fields would be ambiguous
class FileList:
  """Images of one split: absolute paths and their int labels, in a fixed order."""

  paths: np.ndarray  # object array of str [N], absolute paths
  labels: np.ndarray  # int32 [N]
  class_names: tuple[str, ...]  # index -> name; '' where unknown (list files give only ids)
  source: str  # what messages name: the split folder or the list file

  def __post_init__(self):
    if self.paths.shape != self.labels.shape or self.paths.ndim != 1:
      raise ValueError(
        f"{self.source}: paths {self.paths.shape} and labels {self.labels.shape} must be 1-D arrays of the same length"
      )

  def __len__(self):
    return len(self.paths)


class ImageFileError(ValueError):
  """A dataset on disk is missing, laid out wrongly or unreadable; the message names the file."""


class CorruptImageError(ImageFileError):
  """One image exists but cannot be read or decoded (truncated, zero bytes, not an image)."""


def _some(names, limit=_SHOW):
  """A short list of names for a message: the first `limit`, then how many more."""
  names = list(names)
  shown = ", ".join(repr(n) if isinstance(n, str) else str(n) for n in names[:limit])
  return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _contents(folder):
  """What a folder holds, for messages that must say what IS there."""
  try:
    entries = sorted(os.listdir(folder))
  except OSError as e:
    return f"(cannot list it: {e.strerror})"
  if not entries:
    return "nothing (it is empty)"
  return _some([e + "/" if os.path.isdir(os.path.join(folder, e)) else e for e in entries], limit=10)


def _is_image(name):
  return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


# -------------------------------------------------------------------------------- class folders
def _class_dirs(split_dir):
  """Sorted non-hidden sub-folder names of a split folder."""
  return sorted(e for e in os.listdir(split_dir) if not e.startswith(".") and os.path.isdir(os.path.join(split_dir, e)))


def _class_images(class_dir):
  """Image files under a class folder, recursively, in torchvision's order: by folder path, then name."""
  walk = []
  for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=True):
    dirnames[:] = [d for d in dirnames if not d.startswith(".")]  # prunes hidden folders from the walk
    walk.append((dirpath, filenames))
  return [
    os.path.join(dirpath, f)
    for dirpath, filenames in sorted(walk)
    for f in sorted(filenames)
    if _is_image(f) and os.path.isfile(os.path.join(dirpath, f))
  ]


def _scan_split(split_dir):
  """One split folder -> FileList labelled by the split's OWN sorted class folders."""
  classes = _class_dirs(split_dir)
  if not classes:
    raise ImageFileError(
      f"{split_dir}: no class folders; expected {split_dir}/<class>/<image>, but it contains {_contents(split_dir)}"
    )
  paths, labels = [], []
  for k, name in enumerate(classes):
    class_dir = os.path.join(split_dir, name)
    images = _class_images(class_dir)
    if not images:
      raise ImageFileError(
        f"{class_dir}: class folder has no images (extensions "
        f"{' '.join(IMAGE_EXTENSIONS)}, any case; hidden files ignored); "
        f"it contains {_contents(class_dir)}"
      )
    paths.extend(images)
    labels.extend([k] * len(images))
  return FileList(
    paths=np.array(paths, dtype=object), labels=np.array(labels, np.int32), class_names=tuple(classes), source=split_dir
  )


def check_class_names(train: FileList, other: FileList, split: str):
  """Raises ImageFileError unless `other` (test or val) can use train's class ids.

  With names on both sides, every class of `other` must be a train class (a test-only class has no
  trained output). Where names are unknown (''), `other`'s labels must be below train's class count.
  Train classes missing from `other` are fine.
  """
  if all(train.class_names) and all(other.class_names):
    extra = sorted(set(other.class_names) - set(train.class_names))
    if extra:
      raise ImageFileError(
        f"{other.source}: {split} has class folder(s) {_some(extra)} that train "
        f"({train.source}) lacks; train's classes are {_some(train.class_names, 20)}"
      )
    return
  k = len(train.class_names)
  if len(other) and int(other.labels.max()) >= k:
    i = int(np.argmax(other.labels >= k))
    raise ImageFileError(
      f"{other.source}: {split} label {int(other.labels[i])} (for {other.paths[i]}) is "
      f"out of range for train ({train.source}), which has {k} classes; valid range "
      f"is [0, {k - 1}]"
    )


def _relabel(other, train):
  """`other`'s labels re-indexed to train's class ids (its own folder indices differ when classes are missing)."""
  to_train = np.array([train.class_names.index(n) for n in other.class_names], np.int32)
  return dataclasses.replace(other, labels=to_train[other.labels], class_names=train.class_names)


def scan_image_folder(root: str) -> dict[str, FileList]:
  """Scans DIR/train/<class>/*, DIR/test/<class>/* and optional DIR/val/<class>/*.

  Classes are the sorted sub-folder names of train/ (ids 0..K-1), shared by every split. Image files
  are matched by extension, case-insensitively; hidden files and folders are ignored; files are sorted
  by path. Returns {'train', 'test'} and 'val' when present.
  """
  root = os.path.abspath(os.path.expanduser(root))
  if not os.path.exists(root):
    raise ImageFileError(
      f"{root}: image folder does not exist (expected {root}/train/<class>/<image> and {root}/test/<class>/<image>)"
    )
  if not os.path.isdir(root):
    raise ImageFileError(
      f"{root}: is a file, not a folder; an image folder holds train/ and test/ sub-folders of class folders"
    )
  present = [s for s in SPLITS if os.path.isdir(os.path.join(root, s))]
  missing = [s for s in ("train", "test") if s not in present]
  if missing:
    raise ImageFileError(
      f"{root}: no {' or '.join(m + '/' for m in missing)} folder; an image folder "
      f"needs train/ and test/ (val/ optional), each holding <class>/<image>; "
      f"it contains {_contents(root)}"
    )

  splits = {s: _scan_split(os.path.join(root, s)) for s in present}
  train = splits["train"]
  for split in present[1:]:
    check_class_names(train, splits[split], split)
    absent = sorted(set(train.class_names) - set(splits[split].class_names))
    if absent:
      print(
        f"{splits[split].source}: note: {len(absent)} of {len(train.class_names)} train classes have "
        f"no {split} images: {_some(absent)}"
      )
    splits[split] = _relabel(splits[split], train)
  return splits


# -------------------------------------------------------------------------------- list files
_INT = re.compile(r"[+-]?[0-9]+")


def read_list_file(list_path: str, root: str, *, num_classes: int | None = None, check_exists: bool = True) -> FileList:
  """Reads `path label` lines (Clothing1M noisy_label_kv.txt, WebVision train_filelist_google.txt, ...).

  Fields are whitespace separated and the LAST one is the integer label, so paths may contain spaces.
  Blank lines and lines starting with '#' are skipped. Relative paths resolve against `root`.
  With `check_exists`, every listed image must exist (one stat per line: seconds for 1M lines).
  """
  list_path = os.path.abspath(os.path.expanduser(list_path))
  root = os.path.abspath(os.path.expanduser(root))
  if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1):
    raise ValueError(f"num_classes={num_classes!r} must be a positive int (or None to use max label + 1)")
  if not os.path.isfile(list_path):
    what = "is a folder, not a list file" if os.path.isdir(list_path) else "list file does not exist"
    raise ImageFileError(f"{list_path}: {what}; expected lines of `path label`")

  paths, labels, line_numbers = [], [], []
  with open(list_path, "rb") as f:  # bytes, so an undecodable line is reported by number
    for lineno, raw in enumerate(f, start=1):
      try:
        line = raw.decode("utf-8")
      except UnicodeDecodeError as e:
        raise ImageFileError(f"{list_path}:{lineno}: not UTF-8 text ({e.reason} at byte {e.start})") from None
      line = line.lstrip("\ufeff").strip() if lineno == 1 else line.strip()
      if not line or line.startswith("#"):
        continue
      fields = line.rsplit(None, 1)
      if len(fields) < 2:
        raise ImageFileError(
          f"{list_path}:{lineno}: expected `path label` (2+ whitespace-separated fields), got {line!r}"
        )
      path, label = fields
      if not _INT.fullmatch(label):
        raise ImageFileError(
          f"{list_path}:{lineno}: label {label!r} is not an integer "
          f"(the last field of a line is the label), in {line!r}"
        )
      label = int(label)
      if label < 0:
        raise ImageFileError(f"{list_path}:{lineno}: label {label} is negative; labels are class ids >= 0")
      if num_classes is not None and label >= num_classes:
        raise ImageFileError(
          f"{list_path}:{lineno}: label {label} is out of range for "
          f"num_classes={num_classes}; valid range is [0, {num_classes - 1}]"
        )
      paths.append(os.path.normpath(os.path.join(root, path)))  # join keeps an absolute path as is
      labels.append(label)
      line_numbers.append(lineno)
  if not paths:
    raise ImageFileError(
      f"{list_path}: list file has no entries (only blank or # lines); expected lines of `path label`"
    )

  if check_exists:
    missing = [(n, p) for n, p in zip(line_numbers, paths) if not os.path.isfile(p)]
    if missing:
      hint = (
        f"; root {root} does not exist" if not os.path.isdir(root) else f"; relative paths resolve against root={root}"
      )
      shown = "; ".join(f"line {n}: {p}" for n, p in missing[:_SHOW])
      raise ImageFileError(
        f"{list_path}: {len(missing)} of {len(paths)} listed images do not exist{hint}. First missing: {shown}"
      )

  k = num_classes if num_classes is not None else max(labels) + 1
  return FileList(
    paths=np.array(paths, dtype=object), labels=np.array(labels, np.int32), class_names=("",) * k, source=list_path
  )


# -------------------------------------------------------------------------------- decoding
def common_size(path_lists: list, limit: int = 3) -> int:
  """The side of the images at `path_lists` (e.g. each FileList's paths) when every one is square and of the
  same size (read from the file headers, no decoding), for data.image_size=0; otherwise an error naming some
  of the sizes found."""
  sizes: dict[tuple[int, int], str] = {}
  for paths in path_lists:
    for path in paths:
      try:
        with Image.open(path) as im:
          sizes.setdefault(im.size, str(path))
      except (OSError, ValueError) as e:
        raise ImageFileError(f"{path}: cannot be read ({e})") from None
      if len(sizes) > limit:
        break
  if len(sizes) == 1:
    (w, h), path = next(iter(sizes.items()))
    if w == h:
      return int(w)
    raise ValueError(
      f"data.image_size=0 uses the images' own size, but they are {w}x{h} (not square, e.g. {path}); set "
      "data.image_size (images are centre-cropped to a square and resized)"
    )
  found = ", ".join(f"{w}x{h} ({p})" for (w, h), p in sizes.items())
  raise ValueError(
    f"data.image_size=0 uses the images' own size, but they differ: {found}; set data.image_size (images are "
    "centre-cropped to a square and resized)"
  )


def _check_shape(image_size, channels):
  if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 1:
    raise ValueError(f"image_size={image_size!r} must be a positive int")
  if channels not in (1, 3):
    raise ValueError(f"channels={channels!r} must be 1 (greyscale) or 3 (RGB)")


def decode(path: str, image_size: int, channels: int = 3) -> np.ndarray:
  """One image file -> uint8 [image_size, image_size, channels]: centre square crop, bicubic resize.

  RGB for channels=3 (alpha dropped, grey replicated), L for channels=1. EXIF orientation is not
  applied, as in torchvision's loader. Unreadable data raises CorruptImageError.
  """
  _check_shape(image_size, channels)
  if ImageFile.LOAD_TRUNCATED_IMAGES:
    # With it set, PIL pads truncated images with grey and corrupt files silently become training data.
    raise RuntimeError(
      "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True (set by some other code); set it "
      "back to False so that truncated images are detected"
    )
  if not os.path.isfile(path):
    # Not "corrupt": a vanished file means a wrong root or a changed dataset, which skip_corrupt must not hide.
    raise ImageFileError(f"{path}: image file does not exist")
  try:
    with Image.open(path) as image:
      image.load()  # Image.open only reads the header; decoding here is what detects truncation
      image = image.convert("RGB" if channels == 3 else "L")
  except MemoryError:
    raise
  except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, struct.error... for bad data
    size = os.path.getsize(path)
    reason = "zero-byte file" if size == 0 else f"{type(e).__name__}: {e}"
    raise CorruptImageError(f"{path}: cannot decode image ({reason}; {size} bytes)") from e
  image = ImageOps.fit(image, (image_size, image_size), method=Image.Resampling.BICUBIC)
  return np.asarray(image, np.uint8).reshape(image_size, image_size, channels)


def _decode_chunk(files, indices, images, image_size, channels, skip_corrupt):
  """Decodes files[indices] into images[indices]; returns the (index, error) of corrupt ones.

  Without skip_corrupt it stops at the chunk's first corrupt file, so chunks checked in order give
  the first corrupt file of the whole list.
  """
  corrupt = []
  for i in indices:
    try:
      images[i] = decode(files.paths[i], image_size, channels)
    except CorruptImageError as e:
      corrupt.append((i, e))
      if not skip_corrupt:
        break
  return corrupt


def load_images(
  files: FileList, image_size: int, *, channels: int = 3, num_threads: int = 0, skip_corrupt: bool = False
) -> tuple[np.ndarray, np.ndarray, list[str]]:
  """Decodes every file, in parallel threads, into uint8 [N, S, S, C] in file order.

  Returns (images, kept, skipped): kept are int64 indices into `files` of the rows of `images`;
  skipped are the corrupt paths (empty unless skip_corrupt). Without skip_corrupt the first corrupt
  image (in file order) raises CorruptImageError. PIL releases the GIL while decoding, so threads scale.
  """
  if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 0:
    raise ValueError(f"num_threads={num_threads!r} must be an int >= 0 (0: one per CPU core)")
  _check_shape(image_size, channels)
  n = len(files)
  images = np.empty((n, image_size, image_size, channels), np.uint8)
  chunks = [range(s, min(s + _CHUNK, n)) for s in range(0, n, _CHUNK)]
  num_threads = num_threads or os.cpu_count() or 1

  corrupt = []
  if num_threads == 1:
    for chunk in chunks:
      corrupt += _decode_chunk(files, chunk, images, image_size, channels, skip_corrupt)
      if corrupt and not skip_corrupt:
        break
  else:
    pool = concurrent.futures.ThreadPoolExecutor(num_threads, thread_name_prefix="decode")
    try:
      futures = [pool.submit(_decode_chunk, files, c, images, image_size, channels, skip_corrupt) for c in chunks]
      for future in futures:  # in order, so the first error found is the first in file order
        corrupt += future.result()
        if corrupt and not skip_corrupt:
          break
    finally:
      pool.shutdown(wait=True, cancel_futures=True)  # an error must not wait for the whole dataset
  if corrupt and not skip_corrupt:
    raise corrupt[0][1]

  bad = np.array([i for i, _ in corrupt], np.int64)
  kept = np.setdiff1d(np.arange(n, dtype=np.int64), bad)
  skipped = [str(files.paths[i]) for i, _ in corrupt]
  if corrupt:
    if len(kept) == 0:
      raise ImageFileError(f"{files.source}: all {n} images are corrupt, e.g. {corrupt[0][1]}")
    print(
      f"{files.source}: skipped {len(corrupt)} of {n} corrupt images: {_some(os.path.basename(p) for p in skipped)}"
    )
    # Compact in place rather than images[kept], which would copy the whole dataset. kept[j] >= j, so
    # each block reads rows at or after the ones it writes, and no later block reads a row written here.
    for j0 in range(int(bad[0]), len(kept), 4096):
      j1 = min(j0 + 4096, len(kept))
      images[j0:j1] = images[kept[j0:j1]]
    images = images[: len(kept)]
  return images, kept, skipped


def center_crop_resize(image: np.ndarray, size: int) -> np.ndarray:
  """Centre crop to a square, then resize to size x size (bicubic, which antialiases when shrinking)."""
  channels = image.shape[-1]
  pil = Image.fromarray(image[..., 0] if channels == 1 else image)
  pil = ImageOps.fit(pil, (size, size), method=Image.Resampling.BICUBIC)
  return np.asarray(pil, np.uint8).reshape(size, size, channels)
