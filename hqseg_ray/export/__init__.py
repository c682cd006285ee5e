"""Outputs: the per-video Parquet masks file (primary) and exports derived from it.

    from hqseg_ray.export import write_video_parquet, read_video_parquet, MASKS_SCHEMA, export_all
    from hqseg_ray.export import load_review          # a video's review queue (docs/formats.md)
"""

from hqseg_ray.export.parquet import (MASKS_SCHEMA, SCHEMA_VERSION, read_video_meta, read_video_parquet,
                                      video_parquet_path, write_video_parquet)

__all__ = ["MASKS_SCHEMA", "SCHEMA_VERSION", "export_all", "load_review", "read_video_meta", "read_video_parquet",
           "video_parquet_path", "write_video_parquet"]


def __getattr__(name):  # the derived exports import more (PIL, video I/O): load them on use
    if name == "export_all":
        from hqseg_ray.export.formats import export_all

        return export_all
    if name == "load_review":
        from hqseg_ray.export.review import load_review

        return load_review
    raise AttributeError(name)
