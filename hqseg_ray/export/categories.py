"""Category ids of an output: one table for every export of it, made from the masks' labels.

Names are the ``label`` values found in any masks file of the output (``"object"`` for objects
without a label), sorted by name and numbered 1..K. Reading the whole output (only its ``label``
column) rather than the exported videos makes the ids the same in every export of one output,
whichever videos an export covers.
"""

from __future__ import annotations

import os
from typing import Optional

from hqseg_ray.export.formats import DEFAULT_CATEGORY, _mask_files


class Categories:
    """``name -> id`` for an output (``ids``), and the COCO ``categories`` list (``coco``)."""

    def __init__(self, names) -> None:
        self.names = sorted(set(names)) or [DEFAULT_CATEGORY]
        self.ids = {n: i for i, n in enumerate(self.names, 1)}

    @classmethod
    def of_output(cls, output_dir: str) -> "Categories":
        import pyarrow.parquet as pq

        names: set[str] = set()
        root = os.path.join(output_dir, "masks")
        folders = sorted(os.listdir(root)) if os.path.isdir(root) else []
        for name in folders:
            if not name.startswith("video_id="):
                continue
            for f in _mask_files(os.path.join(root, name)):
                schema = pq.read_schema(f)
                if "label" not in schema.names:
                    if pq.ParquetFile(f).metadata.num_rows:
                        names.add(DEFAULT_CATEGORY)
                    continue
                col = pq.read_table(f, columns=["label"]).column("label")
                names.update(v or DEFAULT_CATEGORY for v in col.unique().to_pylist())
        return cls(names)

    def id_of(self, label: Optional[str]) -> int:
        return self.ids[label or DEFAULT_CATEGORY]

    @property
    def coco(self) -> list[dict]:
        return [{"id": i, "name": n, "supercategory": n} for n, i in self.ids.items()]
