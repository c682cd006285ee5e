"""Category ids of an output: one table for every export of it, made from the masks' labels.

Names are the ``label`` values found in any masks file of the output (``"object"`` for objects
without a label), sorted by name and numbered 1..K. Reading the whole output (only its ``label``
column) rather than the exported videos makes the ids the same in every export of one output,
whichever videos an export covers.
"""

from __future__ import annotations

from typing import Optional

from hqseg_ray.export.formats import DEFAULT_CATEGORY, _mask_files


class Categories:
    """``name -> id`` for an output (``ids``), and the COCO ``categories`` list (``coco``)."""

    def __init__(self, names) -> None:
        self.names = sorted(set(names)) or [DEFAULT_CATEGORY]
        self.ids = {n: i for i, n in enumerate(self.names, 1)}

    @classmethod
    def of_output(cls, output_dir: str) -> "Categories":
        """The labels of every masks file under ``output_dir`` (a path or URI: local, s3://, gs://)."""
        from hqseg_ray.storage import open_store, split_uri

        names: set[str] = set()
        root = open_store(str(output_dir)).sub("masks")
        for folder in root.list():
            if not (folder.is_dir and folder.name.startswith("video_id=")):
                continue
            for f in _mask_files(root.url(folder.name)):
                store, name = split_uri(f)
                if "label" not in store.read_schema(name).names:
                    if store.read_table(name, columns=["video_id"]).num_rows:
                        names.add(DEFAULT_CATEGORY)
                    continue
                col = store.read_table(name, columns=["label"]).column("label")
                names.update(v or DEFAULT_CATEGORY for v in col.unique().to_pylist())
        return cls(names)

    def id_of(self, label: Optional[str]) -> int:
        return self.ids[label or DEFAULT_CATEGORY]

    @property
    def coco(self) -> list[dict]:
        return [{"id": i, "name": n, "supercategory": n} for n, i in self.ids.items()]
