"""hqseg-ray: high-quality video segmentation with SAM-HQ, distributed with Ray.

The user-facing entry points are re-exported lazily so that ``import hqseg_ray`` stays
cheap (no torch, no Ray) for the CLI and the config tools.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
