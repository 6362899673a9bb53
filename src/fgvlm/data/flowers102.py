"""Oxford Flowers102 in its official layout: ``jpg/image_NNNNN.jpg``, ``imagelabels.mat``, ``setid.mat``.

Loaded with scipy, without torchvision's md5 check (the mini set in ``../shared`` rewrites ``setid.mat``). When the
full official ``setid.mat`` is present (8,189 ids), each protocol asserts its published split sizes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from fgvlm.data.base import Dataset, DatasetError, Record
from fgvlm.data.download import EXTRACTED_MARKER, download_file, safe_extract
from fgvlm.registry import resource_json

BASE_URL = "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/"
URL_ENV = "FGVLM_FLOWERS102_URL"
# The three official files and their official md5 sums (the same as torchvision's table).
FILES = {
    "102flowers.tgz": "52808999861908f626f3c1f4e79d11fa",
    "imagelabels.mat": "e0620be6f572b9609742df49c70aed4d",
    "setid.mat": "a5357ecc9cb78c4bef273ce3793fc85c",
}
OFFICIAL_TOTAL = 8189

# protocol -> split -> official setid keys whose ids form it, and the sizes on the full official data.
PROTOCOLS: dict[str, dict[str, tuple[str, ...]]] = {
    "official": {"train": ("trnid",), "val": ("valid",), "test": ("tstid",)},
    "trainval": {"train": ("trnid", "valid"), "test": ("tstid",)},
    "swapped": {"train": ("tstid",), "val": ("valid",), "test": ("trnid",)},
}
FULL_SIZES = {
    "official": {"train": 1020, "val": 1020, "test": 6149},
    "trainval": {"train": 2040, "test": 6149},
    "swapped": {"train": 6149, "val": 1020, "test": 1020},
}


def default_root() -> Path:
    return Path("~/.cache/fgvlm/data/flowers102").expanduser()


FLOWER_HEAD_WORDS = ("flower", "plant", "bloom", "blossom")
"""Head words too general to signal a second flower ("balloon flower" and "cape flower" share "flower")."""


class Flowers102(Dataset):
    name = "flowers102"
    protocols = tuple(PROTOCOLS)
    object_word = "flower"
    downloadable = True
    coop_split_file = "split_zhou_OxfordFlowers.json"
    coop_sizes = {"train": 4093, "val": 1633, "test": 2463}
    protocol_docs = {
        "official": "Oxford's split: train = trnid (10/class), val = valid (10/class), test = tstid (6,149).",
        "trainval": "train = trnid + valid (20/class), test = tstid; no validation split.",
        "swapped": "train = tstid (6,149), val = valid, test = trnid (1,020): the reference study's "
        "'6,149 training, 1,020 test' protocol.",
        "coop": "CoOp's split_zhou_OxfordFlowers.json (4,093 / 1,633 / 2,463), as Visual-RFT, CLS-RL and "
        "ReFine-RFT use it.",
    }
    citation = (
        "@inproceedings{nilsback2008automated,\n"
        "  title = {Automated Flower Classification over a Large Number of Classes},\n"
        "  author = {Nilsback, Maria-Elena and Zisserman, Andrew},\n"
        "  booktitle = {Indian Conference on Computer Vision, Graphics and Image Processing (ICVGIP)},\n"
        "  year = {2008}\n"
        "}"
    )

    def __init__(self, root=None, protocol: str = "official", on_bad_image: str = "error"):
        super().__init__(root if root is not None else default_root(), protocol, on_bad_image)
        self.class_names = list(resource_json("flowers102_classes.json"))
        naming = resource_json("flowers102_aliases.json")
        self._display = naming["display"]
        self._aliases = naming["aliases"]

    @property
    def prompt_names(self) -> list[str]:
        return [self._display.get(name, name) for name in self.class_names]

    @property
    def ignored_head_words(self) -> tuple[str, ...]:
        return FLOWER_HEAD_WORDS

    def image_folder(self) -> Path:
        return self.dataset_folder() / "jpg"

    @classmethod
    def download(cls, root=None, base_url: str | None = None, *, progress: bool = True) -> dict:
        """The three official files from Oxford (or ``base_url``), md5-checked and safely extracted."""
        return download_flowers102(root, base_url, progress=progress)

    @property
    def aliases(self) -> dict[int, list[str]]:
        out = {}
        for label, name in enumerate(self.class_names):
            extra = list(self._aliases.get(name, []))
            if name in self._display:
                extra.append(name)  # the official name stays acceptable when a display name replaces it
            out[label] = extra
        return out

    def _load_mat(self, filename: str) -> dict:
        import scipy.io

        path = self.root / filename
        if not path.is_file():
            raise DatasetError(
                f"flowers102: {path} not found. Expected the official layout under {self.root} "
                f"(jpg/, imagelabels.mat, setid.mat); run `fgvlm data download flowers102 --root {self.root}`."
            )
        try:
            return scipy.io.loadmat(path)
        except Exception as err:  # scipy raises several types for a damaged file
            raise DatasetError(f"flowers102: cannot read {path}: {err}") from None

    def list_records(self) -> dict[str, list[Record]]:
        labels = self._load_mat("imagelabels.mat")["labels"].ravel()
        setid = self._load_mat("setid.mat")
        ids = {key: [int(i) for i in setid[key].ravel()] for key in ("trnid", "valid", "tstid")}
        splits = {}
        for split, keys in PROTOCOLS[self.own_protocol].items():
            splits[split] = [
                Record(f"{i:05d}", int(labels[i - 1]) - 1, self.root / "jpg" / f"image_{i:05d}.jpg")
                for key in keys
                for i in ids[key]
            ]
        if sum(len(v) for v in ids.values()) == OFFICIAL_TOTAL:
            sizes = {split: len(records) for split, records in splits.items()}
            if sizes != FULL_SIZES[self.own_protocol]:
                raise DatasetError(
                    f"flowers102 ({self.own_protocol}): split sizes {sizes} differ from the official "
                    f"{FULL_SIZES[self.own_protocol]} although setid.mat lists all {OFFICIAL_TOTAL} ids"
                )
        return splits


# -- download: the three official files, md5-checked, extracted safely, once ----------------------------------
def resolve_base_url(base_url: str | None) -> str:
    """The argument, else ``$FGVLM_FLOWERS102_URL``, else the official Oxford URL; always ends with '/'."""
    url = base_url or os.environ.get(URL_ENV) or BASE_URL
    return url if url.endswith("/") else url + "/"


def _extraction_complete(root: Path, archive_md5: str) -> bool:
    """True when the marker says this archive (by md5) was fully extracted and every file it listed is still there."""
    marker = root / "jpg" / EXTRACTED_MARKER
    try:
        info = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return info.get("md5") == archive_md5 and all((root / name).is_file() for name in info.get("files", []))


def download_flowers102(
    root: str | Path | None = None,
    base_url: str | None = None,
    *,
    files: dict[str, str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Fetch Oxford Flowers102 into ``root`` in its official layout (jpg/, imagelabels.mat, setid.mat).

    ``files`` maps file name -> md5 (default: the official table in ``fgvlm.data.flowers102.FILES``; tests pass
    their own). Idempotent: files whose md5 matches are not fetched, and the image archive is neither fetched nor
    extracted again once a marker in ``jpg/`` records a complete extraction. Returns what was done.
    """
    root = Path(root).expanduser() if root is not None else default_root()
    files = dict(files or FILES)
    url = resolve_base_url(base_url)
    archive_name = "102flowers.tgz"
    summary: dict[str, Any] = {"root": str(root), "base_url": url, "downloaded": [], "skipped": [], "extracted": False}
    for name, md5 in files.items():
        if name == archive_name and _extraction_complete(root, md5):
            summary["skipped"].append(name)
            continue
        fetched = download_file(url + name, root / name, md5, progress=progress)
        summary["downloaded" if fetched else "skipped"].append(name)
        if name == archive_name:
            extracted = safe_extract(root / name, root, progress=progress)
            marker = {"archive": name, "md5": md5, "files": sorted(extracted)}
            (root / "jpg" / EXTRACTED_MARKER).write_text(json.dumps(marker))
            summary["extracted"] = True
    return summary
