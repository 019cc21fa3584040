"""Model builders, registered explicitly into a plain dict (torchvision style).

>>> from sr_models.archs import build_model
>>> net = build_model("espcn_r", scale=2, channels=32, body=2)

Importing this package imports each architecture module, which registers its builders
in :mod:`sr_models.archs.registry`.
"""

from sr_models.archs import dynamic, espcn
from sr_models.archs.registry import MODELS, build_from_spec, build_model, register_model

__all__ = ["MODELS", "build_from_spec", "build_model", "register_model", "dynamic", "espcn"]
