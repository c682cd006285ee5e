"""Outputs: the per-video Parquet masks file (primary) and exports derived from it.

    from hqseg_ray.export import write_video_parquet, read_video_parquet, MASKS_SCHEMA, export_all
"""

from hqseg_ray.export.parquet import (MASKS_SCHEMA, SCHEMA_VERSION, read_video_meta, read_video_parquet,
                                      video_parquet_path, write_video_parquet)

__all__ = ["MASKS_SCHEMA", "SCHEMA_VERSION", "export_all", "read_video_meta", "read_video_parquet",
           "video_parquet_path", "write_video_parquet"]


def __getattr__(name):  # the derived exports import more (PIL, video I/O): load them on use
    if name == "export_all":
        from hqseg_ray.export.formats import export_all

        return export_all
    raise AttributeError(name)
