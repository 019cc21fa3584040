"""Content-aware patch chunking (STDO): patch grid, difficulty scores, quantile groups.

Pure NumPy: the client uses :mod:`chunking.grid` to cut and stitch patches, so
nothing here may import torch.
"""

from chunking.grid import Grid, load_labels, save_labels
from chunking.groups import assign_groups
from chunking.score import SCORERS, lanczos_psnr_y

__all__ = ["Grid", "save_labels", "load_labels", "assign_groups", "SCORERS", "lanczos_psnr_y"]
