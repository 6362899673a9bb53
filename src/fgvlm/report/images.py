"""Thumbnails of a run's images, found again through the dataset the run recorded (never through a model).

The run's ``config.yaml`` ``data`` section (else ``meta.json``'s dataset entry) reopens the dataset with
``fgvlm.data.create_dataset``; image ids map to records of the evaluated split. When the data cannot be opened
(moved, not downloaded here, an unknown dataset) the report shows a note with the reason instead of images.
"""

from __future__ import annotations

import base64
import io
from typing import Any

from fgvlm.report.rundirs import RunInfo

THUMBNAIL_PX = 112


class ImageFinder:
    """Thumbnails (JPEG data URIs) of one run's images by id; ``note`` says why there are none."""

    def __init__(self, run: RunInfo, split: str | None):
        self.run, self.split = run, split
        self.note: str | None = None
        self._records: dict[str, Any] | None = None
        self._dataset: Any = None

    def _open(self) -> None:
        from fgvlm.config import ConfigError, DataConfig, from_dict
        from fgvlm.data import DatasetError, create_dataset
        from fgvlm.registry import UnknownNameError

        self._records = {}
        data = self.run.config.get("data")
        if not isinstance(data, dict):
            described = self.run.meta.get("dataset") or {}
            keys = ("dataset", "root", "protocol", "split_file", "shots", "shot_seed", "classes")
            data = {k: described[k] for k in keys if described.get(k) is not None}
        if not data.get("dataset") or not self.split:
            self.note = "images not shown: the run records no dataset or split"
            return
        try:
            self._dataset = create_dataset(from_dict(DataConfig, data, where=f"{self.run.path}/config.yaml data"))
            self._records = {r.id: r for r in self._dataset.split(self.split).records}
        except (ConfigError, DatasetError, UnknownNameError, OSError, ValueError) as err:
            self.note = f"images not shown: cannot open the run's dataset ({err})"

    def thumbnail(self, image_id: str) -> str | None:
        """A JPEG data URI of the image, or None (and ``note`` set) when it cannot be found or read."""
        if self._records is None:
            self._open()
        record = self._records.get(image_id) if self._records else None
        if record is None:
            if self.note is None:
                self.note = f"images not shown: id {image_id!r} is not in the dataset's {self.split!r} split"
            return None
        try:
            image = self._dataset.load_image(record)
        except (OSError, ValueError) as err:
            self.note = f"some images not shown: {err}"
            return None
        image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="JPEG", quality=80)
        return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
