"""experiments/image_files.py on small real image files written to tmp_path: folder scans, list files,
decoding (crop, resize, colour conversion), corrupt files and parallel loading."""

import os

import numpy as np
import pytest
from PIL import Image, ImageFile

from experiments.data import image_files as imf

RNG = np.random.default_rng(0)


def _write(path, array=None, fmt=None):
  """A small image at `path` (10x12 random RGB unless given); returns the path as str."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  if array is None:
    array = RNG.integers(0, 256, (10, 12, 3), dtype=np.uint8)
  Image.fromarray(array).save(path, format=fmt)
  return str(path)


def _solid(value, shape=(10, 12, 3)):
  return np.full(shape, value, np.uint8)


def _tree(root, layout):
  """layout: {'train/cat': ['a.png', ...], ...}; files named *.txt get text, others images."""
  for folder, names in layout.items():
    os.makedirs(root / folder, exist_ok=True)
    for name in names:
      if name.endswith(".txt") or name == ".DS_Store":
        (root / folder / name).write_text("not an image")
      else:
        _write(root / folder / name, fmt="PNG")
  return str(root)


# -------------------------------------------------------------------------------- folder scan
def test_scan_sorts_classes_and_files_and_ignores_hidden_and_non_images(tmp_path):
  root = _tree(
    tmp_path,
    {
      "train/dog": ["b.png", "a.PNG", "c.jpeg", ".hidden.png", "notes.txt", ".DS_Store"],
      "train/cat": ["z.png", "sub/y.png"],
      "train/.ipynb_checkpoints": ["x.png"],  # a hidden folder is not a class
      "train/ant": ["1.Jpg"],
      "test/cat": ["t.png"],
      "test/ant": ["u.png"],
      "test/dog": ["v.png"],
    },
  )
  (tmp_path / "train" / "readme.txt").write_text("a stray file is not a class")
  splits = imf.scan_image_folder(root)
  assert set(splits) == {"train", "test"}
  train = splits["train"]
  assert train.class_names == ("ant", "cat", "dog")
  rel = [os.path.relpath(p, root) for p in train.paths]
  assert rel == [
    "train/ant/1.Jpg",
    "train/cat/z.png",
    "train/cat/sub/y.png",  # torchvision's order
    "train/dog/a.PNG",
    "train/dog/b.png",
    "train/dog/c.jpeg",
  ]
  assert train.labels.dtype == np.int32 and train.labels.tolist() == [0, 1, 1, 2, 2, 2]
  assert all(os.path.isabs(p) for p in train.paths)
  assert train.source == os.path.join(root, "train") and len(train) == 6
  assert splits["test"].labels.tolist() == [0, 1, 2]
  assert splits["test"].class_names == train.class_names


def test_scan_val_is_optional_and_missing_test_classes_keep_train_ids(tmp_path, capsys):
  root = _tree(
    tmp_path,
    {
      "train/a": ["1.png"],
      "train/b": ["1.png"],
      "train/c": ["1.png"],
      "test/c": ["1.png"],
      "val/b": ["1.png", "2.png"],
    },
  )
  splits = imf.scan_image_folder(root)
  assert set(splits) == {"train", "test", "val"}
  assert splits["test"].labels.tolist() == [2]  # c is train class 2, though test's only folder
  assert splits["val"].labels.tolist() == [1, 1]
  assert splits["val"].class_names == ("a", "b", "c")
  out = capsys.readouterr().out
  assert "2 of 3 train classes have no test images" in out and "'a'" in out


@pytest.mark.parametrize(
  "layout, match",
  [
    ({"test/a": ["1.png"]}, r"no train/ folder.*contains 'test/'"),
    ({"train/a": ["1.png"]}, r"no test/ folder.*contains 'train/'"),
    ({"train/a": ["1.png"], "test": []}, r"test: no class folders.*it is empty"),
    ({"train/a": ["1.png"], "test/a": ["x.txt", "y.heic"]}, r"test/a: class folder has no images.*'x.txt'"),
    ({"train/a": [".h.png"], "test/a": ["1.png"]}, r"train/a: class folder has no images"),
  ],
)
def test_scan_layout_errors_say_what_is_there(tmp_path, layout, match):
  root = _tree(tmp_path, layout)
  with pytest.raises(imf.ImageFileError, match=match):
    imf.scan_image_folder(root)


def test_scan_root_missing_or_a_file(tmp_path):
  with pytest.raises(imf.ImageFileError, match="nope: image folder does not exist"):
    imf.scan_image_folder(str(tmp_path / "nope"))
  (tmp_path / "f").write_text("")
  with pytest.raises(imf.ImageFileError, match="is a file, not a folder"):
    imf.scan_image_folder(str(tmp_path / "f"))


@pytest.mark.parametrize("split", ["test", "val"])
def test_scan_rejects_classes_that_train_lacks(tmp_path, split):
  root = _tree(
    tmp_path, {"train/a": ["1.png"], "test/a": ["1.png"], f"{split}/a": ["2.png"], f"{split}/zebra": ["1.png"]}
  )
  with pytest.raises(imf.ImageFileError, match=rf"{split} has class folder\(s\) 'zebra' that train"):
    imf.scan_image_folder(root)


def test_check_class_names_with_unknown_names_checks_the_label_range():
  def fl(labels, k):
    return imf.FileList(
      paths=np.array([f"/x/{i}" for i in range(len(labels))], dtype=object),
      labels=np.array(labels, np.int32),
      class_names=("",) * k,
      source="list.txt",
    )

  imf.check_class_names(fl([0, 2], 3), fl([2], 5), "val")
  with pytest.raises(imf.ImageFileError, match=r"val label 3 .*valid range is \[0, 2\]"):
    imf.check_class_names(fl([0, 2], 3), fl([1, 3], 5), "val")


# -------------------------------------------------------------------------------- list files
def _list(tmp_path, text, name="list.txt"):
  path = tmp_path / name
  path.write_bytes(text.encode("utf-8"))
  return str(path)


def test_read_list_file_parses_spaces_comments_absolute_paths(tmp_path):
  a = _write(tmp_path / "images" / "0" / "a.jpg", fmt="JPEG")
  b = _write(tmp_path / "images" / "my dir" / "b c.png")
  absolute = _write(tmp_path / "elsewhere" / "d.png")
  text = f"# path label\n\nimages/0/a.jpg 3\r\n  images/my dir/b c.png\t0  \n   # indented comment\n{absolute} 1\n"
  files = imf.read_list_file(_list(tmp_path, text), str(tmp_path))
  assert files.paths.tolist() == [a, b, absolute]
  assert files.labels.dtype == np.int32 and files.labels.tolist() == [3, 0, 1]
  assert files.class_names == ("",) * 4
  assert files.source == str(tmp_path / "list.txt")
  assert imf.read_list_file(_list(tmp_path, text), str(tmp_path), num_classes=14).class_names == ("",) * 14


def test_read_list_file_check_exists_false_does_not_stat(tmp_path):
  files = imf.read_list_file(_list(tmp_path, "x/1.jpg 0\nx/2.jpg 1\n"), str(tmp_path / "r"), check_exists=False)
  assert files.paths.tolist() == [str(tmp_path / "r" / "x" / "1.jpg"), str(tmp_path / "r" / "x" / "2.jpg")]


@pytest.mark.parametrize(
  "text, match",
  [
    ("a.png 0\nonlyonefield\n", r"list.txt:2: expected `path label`.*'onlyonefield'"),
    ("# c\na.png cat\n", r"list.txt:2: label 'cat' is not an integer"),
    ("a.png 1.0\n", r"list.txt:1: label '1.0' is not an integer"),
    ("a.png 0\n\na.png -1\n", r"list.txt:3: label -1 is negative"),
    (
      "a.png 0\na.png 10\n",
      r"list.txt:2: label 10 is out of range for num_classes=10; "
      r"valid range is \[0, 9\]",
    ),
    ("# only a comment\n\n", r"list.txt: list file has no entries"),
  ],
)
def test_read_list_file_errors_name_file_and_line(tmp_path, text, match):
  _write(tmp_path / "a.png")
  with pytest.raises(imf.ImageFileError, match=match):
    imf.read_list_file(_list(tmp_path, text), str(tmp_path), num_classes=10)


def test_read_list_file_missing_list_and_missing_images(tmp_path):
  with pytest.raises(imf.ImageFileError, match=r"nope.txt: list file does not exist"):
    imf.read_list_file(str(tmp_path / "nope.txt"), str(tmp_path))
  _write(tmp_path / "ok.png")
  lines = ["ok.png 0"] + [f"gone{i}.png 1" for i in range(7)]
  with pytest.raises(
    imf.ImageFileError, match=r"7 of 8 listed images do not exist.*line 2: .*gone0.png.*line 6: .*gone4.png$"
  ):
    imf.read_list_file(_list(tmp_path, "\n".join(lines)), str(tmp_path))
  with pytest.raises(imf.ImageFileError, match=r"root .*nowhere does not exist"):
    imf.read_list_file(_list(tmp_path, "ok.png 0\n"), str(tmp_path / "nowhere"))


def test_read_list_file_rejects_non_utf8_with_line(tmp_path):
  path = tmp_path / "list.txt"
  path.write_bytes(b"a.png 0\n\xff\xfe.png 1\n")
  with pytest.raises(imf.ImageFileError, match=r"list.txt:2: not UTF-8"):
    imf.read_list_file(str(path), str(tmp_path), check_exists=False)


# -------------------------------------------------------------------------------- decode
def test_decode_shape_dtype_and_bad_arguments(tmp_path):
  path = _write(tmp_path / "a.png")
  out = imf.decode(path, 8)
  assert out.shape == (8, 8, 3) and out.dtype == np.uint8
  assert imf.decode(path, 5, channels=1).shape == (5, 5, 1)
  with pytest.raises(ValueError, match="image_size=0"):
    imf.decode(path, 0)
  with pytest.raises(ValueError, match="channels=2"):
    imf.decode(path, 8, channels=2)


@pytest.mark.parametrize("transpose", [False, True])
def test_decode_crops_the_centre_square_then_resizes(tmp_path, transpose):
  # Three 10-wide bands: only the green one is the centre square. Wide, or tall when transposed.
  bands = np.zeros((10, 30, 3), np.uint8)
  bands[:, :10] = [255, 0, 0]
  bands[:, 10:20] = [0, 255, 0]
  bands[:, 20:] = [0, 0, 255]
  if transpose:
    bands = bands.transpose(1, 0, 2).copy()
  path = _write(tmp_path / "bands.png", bands)
  assert (imf.decode(path, 10) == [0, 255, 0]).all()  # crop only: exact
  small = imf.decode(path, 5).astype(int)
  # Bicubic samples a little across the crop edge (Pillow's box resize), so allow slight bleed there.
  assert (small[..., 1] >= 230).all() and (small[..., [0, 2]] <= 25).all()
  assert (small[1:4, 1:4] == [0, 255, 0]).all()


def test_decode_converts_grey_and_rgba(tmp_path):
  grey = _write(tmp_path / "g.png", _solid(77, (10, 12)))
  out = imf.decode(grey, 4)
  assert out.shape == (4, 4, 3) and (out == 77).all()
  rgba = _write(tmp_path / "rgba.png", _solid([10, 20, 30, 0], (12, 10, 4)))
  assert (imf.decode(rgba, 4) == [10, 20, 30]).all()
  rgb = _write(tmp_path / "rgb.png", _solid([0, 255, 0]))
  assert (imf.decode(rgb, 4, channels=1) == 150).all()  # ITU-R 601 luma of pure green: 149.7


def _corrupt_files(tmp_path):
  """name -> path of each kind of unreadable image."""
  paths = {"zero": tmp_path / "zero.jpg", "text": tmp_path / "text.jpg"}
  paths["zero"].write_bytes(b"")
  paths["text"].write_text("this is not a JPEG\n")
  for fmt, ext in [("PNG", "png"), ("JPEG", "jpg")]:
    full = _write(tmp_path / f"full.{ext}", RNG.integers(0, 256, (32, 32, 3), dtype=np.uint8), fmt)
    data = open(full, "rb").read()
    paths[f"cut_{ext}"] = tmp_path / f"cut.{ext}"
    paths[f"cut_{ext}"].write_bytes(data[: len(data) // 2])
  return {k: str(v) for k, v in paths.items()}


@pytest.mark.parametrize(
  "kind, reason",
  [
    ("zero", "zero-byte file"),
    ("text", "cannot identify image"),
    ("cut_png", "(?i)truncated"),
    ("cut_jpg", "(?i)truncated"),
  ],
)
def test_decode_corrupt_files_raise_naming_path_and_reason(tmp_path, kind, reason):
  path = _corrupt_files(tmp_path)[kind]
  with pytest.raises(imf.CorruptImageError, match=reason) as e:
    imf.decode(path, 8)
  assert path in str(e.value) and isinstance(e.value, imf.ImageFileError)


def test_decode_missing_file_is_not_corrupt(tmp_path):
  with pytest.raises(imf.ImageFileError, match="gone.png: image file does not exist") as e:
    imf.decode(str(tmp_path / "gone.png"), 8)
  assert not isinstance(e.value, imf.CorruptImageError)


def test_decode_refuses_load_truncated_images(tmp_path, monkeypatch):
  assert ImageFile.LOAD_TRUNCATED_IMAGES is False
  monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
  with pytest.raises(RuntimeError, match="LOAD_TRUNCATED_IMAGES is True"):
    imf.decode(_write(tmp_path / "a.png"), 8)


# -------------------------------------------------------------------------------- load_images
def _files(paths):
  return imf.FileList(
    paths=np.array(paths, dtype=object), labels=np.zeros(len(paths), np.int32), class_names=("",), source="test-list"
  )


def _solids(tmp_path, n):
  """n solid-colour images whose red value is 10 * index."""
  return [_write(tmp_path / f"{i:02d}.png", _solid([10 * i, 0, 255])) for i in range(n)]


def test_load_images_keeps_order_and_threads_agree(tmp_path, monkeypatch):
  monkeypatch.setattr(imf, "_CHUNK", 3)  # several chunks per thread on a small list
  paths = _solids(tmp_path, 10) + [_write(tmp_path / "rand.png"), _write(tmp_path / "g.png", _solid(5, (7, 9)))]
  files = _files(paths)
  one, kept, skipped = imf.load_images(files, 6, num_threads=1)
  four, kept4, _ = imf.load_images(files, 6, num_threads=4)
  assert one.shape == (12, 6, 6, 3) and one.dtype == np.uint8
  assert np.array_equal(one, four) and np.array_equal(kept, kept4)
  assert kept.dtype == np.int64 and kept.tolist() == list(range(12)) and skipped == []
  assert one[:10, ..., 0].reshape(10, -1).min(1).tolist() == [10 * i for i in range(10)]
  assert (one[:10, ..., 0].reshape(10, -1).max(1) == one[:10, ..., 0].reshape(10, -1).min(1)).all()
  grey, _, _ = imf.load_images(files, 4, channels=1, num_threads=0)
  assert grey.shape == (12, 4, 4, 1) and (grey[11] == 5).all()


@pytest.mark.parametrize("num_threads", [1, 3])
def test_load_images_raises_on_the_first_corrupt_file(tmp_path, monkeypatch, num_threads):
  monkeypatch.setattr(imf, "_CHUNK", 2)
  bad = _corrupt_files(tmp_path)
  paths = _solids(tmp_path, 5)
  paths[3:3] = [bad["cut_png"]]
  paths.append(bad["zero"])
  with pytest.raises(imf.CorruptImageError, match="cut.png"):
    imf.load_images(_files(paths), 4, num_threads=num_threads)


@pytest.mark.parametrize("num_threads", [1, 3])
def test_load_images_skips_corrupt_files_when_asked(tmp_path, monkeypatch, capsys, num_threads):
  monkeypatch.setattr(imf, "_CHUNK", 2)
  bad = _corrupt_files(tmp_path)
  good = _solids(tmp_path, 6)
  paths = [good[0], bad["zero"], good[1], good[2], bad["cut_jpg"], bad["text"], good[3], good[4], good[5]]
  images, kept, skipped = imf.load_images(_files(paths), 4, num_threads=num_threads, skip_corrupt=True)
  assert kept.tolist() == [0, 2, 3, 6, 7, 8]
  assert skipped == [bad["zero"], bad["cut_jpg"], bad["text"]]
  assert images.shape == (6, 4, 4, 3)
  assert images[:, 0, 0, 0].tolist() == [0, 10, 20, 30, 40, 50]  # rows follow kept, compacted
  assert "skipped 3 of 9 corrupt images: 'zero.jpg', 'cut.jpg', 'text.jpg'" in capsys.readouterr().out


def test_load_images_all_corrupt_or_empty(tmp_path):
  bad = _corrupt_files(tmp_path)
  with pytest.raises(imf.ImageFileError, match="all 2 images are corrupt"):
    imf.load_images(_files([bad["zero"], bad["text"]]), 4, skip_corrupt=True)
  images, kept, skipped = imf.load_images(_files([]), 4)
  assert images.shape == (0, 4, 4, 3) and kept.shape == (0,) and skipped == []
  with pytest.raises(ValueError, match="num_threads=-1"):
    imf.load_images(_files([]), 4, num_threads=-1)


# -------------------------------------------------------------------------- image_size inferred
def _tiny_folder(root, sizes):
  """train/ and test/ with classes a and b, one image per size in `sizes` each."""
  for split in ("train", "test"):
    for c in ("a", "b"):
      for i, (h, w) in enumerate(sizes):
        _write(root / split / c / f"{i}.png", RNG.integers(0, 256, (h, w, 3), dtype=np.uint8))
  return str(root)


def test_image_size_is_inferred_when_all_images_share_a_square_size(tmp_path):
  # Fails before the fix: image_size=0 was 'set data.image_size >= 1' for image folders.
  from experiments import data
  from tests.data_configs import data_config

  ds = data.load(data_config("image_folder", path=_tiny_folder(tmp_path / "same", [(8, 8), (8, 8)])))
  assert ds.image_shape == (8, 8, 3) and len(ds.train) == 4 and ds.class_names == ("a", "b")
  with pytest.raises(ValueError, match=r"they differ: 8x8 \(.*\), 6x6 \(.*\); set data.image_size"):
    data.load(data_config("image_folder", path=_tiny_folder(tmp_path / "mixed", [(8, 8), (6, 6)])))
  with pytest.raises(ValueError, match=r"they are 12x8 \(not square"):
    data.load(data_config("image_folder", path=_tiny_folder(tmp_path / "wide", [(8, 12)])))
