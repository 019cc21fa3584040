"""Content-aware patch chunking (STDO): difficulty scores, quantile groups, routes and the gate.

Pure NumPy over the core's patch grid (:mod:`fitcast.grid`); nothing here may import torch.
"""

from chunking.groups import assign_groups
from chunking.score import SCORERS, lanczos_psnr_y

__all__ = ["assign_groups", "SCORERS", "lanczos_psnr_y"]
