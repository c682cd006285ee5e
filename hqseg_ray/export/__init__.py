"""Outputs: the per-video Parquet masks file (primary) and exports derived from it.

    from hqseg_ray.export import write_video_parquet, read_video_parquet, MASKS_SCHEMA, export_all
"""

from hqseg_ray.export.parquet import (MASKS_SCHEMA, SCHEMA_VERSION, read_video_meta, read_video_parquet,
                                      video_parquet_path, write_video_parquet)

__all__ = ["MASKS_SCHEMA", "SCHEMA_VERSION", "export_all", "read_video_meta", "read_video_parquet",
           "video_parquet_path", "write_video_parquet"]


def export_all(output_dir: str, formats, video_ids=None) -> dict:
    """Write the derived exports (coco, ytvis, davis, overlay) of a job's output; ``{format: path}``.
    See ``hqseg_ray.export.formats``."""
    from hqseg_ray.export.formats import make_writers, run_writers

    return run_writers(output_dir, make_writers(output_dir, list(formats)), video_ids)
