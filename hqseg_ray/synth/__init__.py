"""Synthetic scenes and videos with exact ground truth (deterministic by seed).

    from hqseg_ray.synth import generate_scene, generate_video, write_dataset
"""

from hqseg_ray.synth.generate import Scene, Video, generate_scene, generate_video
from hqseg_ray.synth.render import SHAPES
from hqseg_ray.synth.dataset import write_dataset, write_video, DAVIS_PALETTE

__all__ = ["SHAPES", "Scene", "Video", "generate_scene", "generate_video", "write_dataset", "write_video",
           "DAVIS_PALETTE"]
