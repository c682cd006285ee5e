"""Outputs: the per-video Parquet masks file (primary) and exports derived from it.

    from hqseg_ray.export import write_video_parquet, read_video_parquet, MASKS_SCHEMA
"""

from hqseg_ray.export.parquet import (MASKS_SCHEMA, SCHEMA_VERSION, read_video_meta, read_video_parquet,
                                      video_parquet_path, write_video_parquet)

__all__ = ["MASKS_SCHEMA", "SCHEMA_VERSION", "read_video_meta", "read_video_parquet", "video_parquet_path",
           "write_video_parquet"]
