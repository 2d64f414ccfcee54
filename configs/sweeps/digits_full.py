"""Every loss on the main job's grid (36 losses × 7 noise settings × 3 seeds; the first 30 took ~22 minutes on 2
CPU cores).
The main job (`digits.py`) is a subset of these rows with identical configs, so both can share a workdir.
  python -m experiments.sweep --config=configs/sweeps/digits_full.py --workdir=runs/sweep_digits
"""

from configs.sweeps import _grid as g
from configs.sweeps import digits as main_job


def get_config():
  return g.sweep(main_job.base(), main_job.all_rows(), main_job.NOISES, num_seeds=3)
