"""Shared base config. Every other config starts from `get_config()` here and overrides a few keys.

Run: python -m experiments.train --config=configs/default.py --workdir=DIR [--config.key=value ...]
The config is locked, so a misspelt key is an error that lists the valid keys.
"""

import ml_collections
from ml_collections import config_dict


def loss_config(name: str = "softmax_cross_entropy", **hparams) -> ml_collections.ConfigDict:
  """`loss.name` plus a typed placeholder for every hyperparameter any registered loss takes.

  Unset (None) means "the loss's own default"; setting one the chosen loss does not take is an error.
  """
  import robust_losses  # local import: configs stay cheap to import for tools that only read them

  cfg = ml_collections.ConfigDict({"name": name})
  for hp, typ in sorted(robust_losses.hparam_types().items()):
    cfg[hp] = config_dict.placeholder(typ)
  for hp, value in hparams.items():
    cfg[hp] = value
  return cfg


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()

  # Data (experiments/data/), handed whole to the data layer. `data.name` is 'digits' (embedded, no
  # download), 'npz' (with data.path), 'image_folder' (data.path=DIR with train/, test/ and optionally val/,
  # one sub-folder per class), 'image_list' (`path label` list files under data.path: Clothing1M / WebVision /
  # Food-101N style) or a TFDS name. '' and 0 mean the dataset's default.
  c.data = ml_collections.ConfigDict()
  c.data.name = "digits"
  c.data.path = ""  # npz: the .npz file (keras mnist.npz layout); image_folder/image_list: the root DIR
  c.data.train_list = ""  # image_list: `relative/path label` lines (relative to data.path, or absolute)
  c.data.test_list = ""
  c.data.val_list = ""  # optional clean validation list (image_list); val/ is found by itself (image_folder)
  c.data.skip_corrupt = False  # image files: skip (and count) unreadable images instead of stopping
  c.data.tfds_dir = ""  # TFDS data_dir ('' = TFDS default)
  c.data.tfds_config = ""  # e.g. 'mini_imagenet_red' for controlled_noisy_web_labels
  c.data.real_label_key = ""  # which human label set for noise.kind='real' ('' = dataset default)
  c.data.train_split = ""  # controlled_noisy_web_labels: noise level split, e.g. 'train_40'
  # Resize on load (imagewang, controlled_noisy_web_labels, image files); 0 = the dataset's, for image files
  # the images' own size when all are square and of one size (read from the file headers; else an error).
  c.data.image_size = 0
  c.data.val_size = 0  # removed (an error if set): use the top-level val_fraction and val_labels='clean'
  c.data.num_classes = 0  # 0 = the dataset's (npz: inferred, and a gap or unseen test class is an error)
  # On-device training augmentation: 'default' is the dataset's (random crop with zero padding image_size/8
  # or the dataset's own, and a horizontal flip where it preserves the label: CIFAR, Fashion-MNIST, image
  # files; none for digits, MNIST crops only), or 'none' | 'crop' | 'flip' | 'crop_flip'.
  c.data.augment = "default"
  # Input: 'memory' loads the decoded dataset into host memory (the fast path for small data), 'stream' reads
  # each process's shard of every global batch with grain worker threads, 'auto' streams when the decoded
  # training set exceeds input_memory_gb.
  c.data.input = "auto"
  c.data.input_memory_gb = 4.0
  c.data.input_workers = 0  # grain read/decode threads per process (0 = one per CPU core)
  c.data.input_prefetch = 2  # compiled calls' worth of batches decoded ahead per process (needs steps_per_call >= 1)
  c.data.stats_max_examples = 20000  # stream: channel mean/std from all training images up to this many, else
  # a seeded sample of this many (in memory they always use every image)

  # Label noise (experiments/noise.py).
  c.noise = ml_collections.ConfigDict()
  c.noise.kind = "symmetric"  # none|symmetric|uniform|asymmetric|pairflip|matrix|real|file
  c.noise.rate = 0.4
  c.noise.matrix = config_dict.placeholder(tuple)  # K×K row-stochastic, for kind='matrix'
  c.noise.path = ""  # kind='file': noisy labels, a run's noisy_labels.npz or int [N] / [R, N] (docs/NOISE_FILES.md)

  # Validation split (experiments/splits.py): hold out this share of the training set, after the noise is
  # applied, and select each replica's epoch by its accuracy there (summary.json `selected_epoch`). The labels it
  # is scored against: 'noisy' (the held-out examples' noisy labels: all a user with real noisy data has, and
  # what the docs recommend) or 'clean' (the dataset's labels: the optimistic clean hold-out of the TCE paper).
  c.val_fraction = 0.0  # in [0, 1); 0 = no split (a dataset's own validation split is still used)
  c.val_labels = "noisy"

  # Model (experiments/models.py); 'auto' picks one that fits the input shape.
  c.model = "auto"
  # Fine-tuning: start from these weights (an orbax checkpoint of this project: a workdir, its checkpoints/ or
  # one step's directory; or a flax msgpack file of {'params', 'batch_stats'}, see docs/CHECKPOINTS.md). The
  # classifier ('head') is re-initialised when its shape differs (another number of classes).
  c.init_from = ""
  c.freeze_backbone = False  # train only the head; the backbone runs in eval mode (BatchNorm as loaded)
  c.compute_dtype = "float32"  # or 'bfloat16' (params stay float32)

  # Loss (robust_losses registry).
  c.loss = loss_config("softmax_cross_entropy")
  # Schedules belong to the loss (loss.warmup_epochs of the clipping losses, loss.prune_start_epoch and
  # loss.prune_every_epochs of truncated Lq); the loop names no loss.

  # Optimisation.
  c.num_epochs = 30
  c.batch_size = 128  # global batch, split evenly over all devices
  c.optimizer = "sgd"  # sgd|adam|adamw
  c.learning_rate = 0.1
  c.momentum = 0.9
  c.nesterov = True
  c.weight_decay = 1e-4
  c.schedule = "cosine"  # constant|cosine|step|exponential
  c.lr_boundaries = config_dict.placeholder(tuple)  # epochs, for schedule='step'
  c.lr_decay = 0.1  # factor at each boundary (step) or after every epoch (exponential)
  c.warmup_epochs = 0
  c.grad_clip_norm = 0.0  # >0: the gradient-clipping baseline (optax.clip_by_global_norm)
  c.l1_weight_decay = 0.0  # >0: L1 penalty on all parameters (ANL, JAL use it with weight_decay=0)

  # Runs.
  c.seed = 0
  c.num_seeds = 1  # seeds seed..seed+num_seeds-1 train together, vmapped in one program
  c.eval_batch_size = 256  # per device
  c.train_eval_max_examples = 10000  # memorisation metrics on this many training examples (0 = all)
  # Suspected label errors (experiments/audit.py): an eval pass over the training set at each of the last
  # this many epochs ranks the examples by the loss of their given label (0 = no audit).
  c.label_audit_epochs = 3
  c.steps_per_call = 50  # optimisation steps per compiled call (lax.scan); progress updates between
  # One step per call, no XLA while loop (None = auto: on CPU for conv models, where XLA:CPU runs
  # convolutions inside loops ~20x slower, jax-ml/jax#12868). Overrides steps_per_call when on.
  c.loop_free = config_dict.placeholder(bool)
  c.checkpoint_every_epochs = 1
  c.keep_checkpoints = 2
  c.skip_nonfinite = False  # True: skip and count non-finite steps instead of stopping the run
  # ... but fail the run once a replica has skipped more than this share of its steps so far (checked after
  # every epoch): beyond it the numbers would not describe a trained model.
  c.skip_nonfinite_max_share = 0.05
  c.num_devices = 0  # data-parallel over this many devices (0 = all)
  c.distributed = False  # jax.distributed.initialize() (multi-host; also on by the standard env vars)
  c.overwrite = False  # workdir holds a run of another config: move it aside instead of refusing
  c.progress = True
  return c
