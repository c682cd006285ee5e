"""DAVIS-style evaluation: J, F, J&F and identity switches.

    from hqseg_ray.eval import evaluate_video, evaluate_dataset
"""

from hqseg_ray.eval.dataset import evaluate_dataset, read_gt_video, read_predictions
from hqseg_ray.eval.metrics import f_score, j_score, evaluate_video

__all__ = ["evaluate_video", "evaluate_dataset", "j_score", "f_score", "read_gt_video", "read_predictions"]
