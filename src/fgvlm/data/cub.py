"""CUB-200-2011: 200 bird species, official train (5,994) / test (5,794), from local files.

torchvision has no class for it, so fgvlm reads the official text files of ``CUB_200_2011.tgz`` (published by
Caltech): ``ROOT/CUB_200_2011/{images.txt, image_class_labels.txt, train_test_split.txt, classes.txt, images/}``
(ROOT may also be the ``CUB_200_2011`` folder itself). Class names are the folder names ("001.Black_footed_Albatross"),
shown in prompts without number and underscores ("Black footed Albatross"); where CUB's name differs from the
bird's common English name ("Geococcyx" is the Greater Roadrunner, "Artic Tern" the Arctic Tern), the common name
is an alias (``fgvlm/resources/cub200_aliases.json``). Record ids are image paths under ``images/`` without the
extension; split files' paths are relative to ``images/``.
"""

from __future__ import annotations

from pathlib import Path

from fgvlm.data.base import Dataset, DatasetError, Record
from fgvlm.data.imagefolder import display_name
from fgvlm.registry import resource_json

FOLDER = "CUB_200_2011"
FILES = ("images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt")
PAGE = "https://www.vision.caltech.edu/datasets/cub_200_2011/"


def read_table(path: Path) -> dict[int, str]:
    """One of CUB's ``<id> <value>`` files -> {id: value}; errors name the file and the line."""
    if not path.is_file():
        raise DatasetError(f"cub200: {path} not found; expected the official layout {FOLDER}/{{{', '.join(FILES)}}}")
    table: dict[int, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        key, _, value = line.strip().partition(" ")
        if not key.isdigit() or not value:
            raise DatasetError(f"cub200: {path} line {number}: expected '<id> <value>', got {line!r}")
        table[int(key)] = value.strip()
    return table


class CUB200(Dataset):
    name = "cub200"
    object_word = "bird species"
    protocols = ("official",)
    citation = (
        "@techreport{wah2011cub,\n"
        "  title = {The Caltech-UCSD Birds-200-2011 Dataset},\n"
        "  author = {Wah, Catherine and Branson, Steve and Welinder, Peter and Perona, Pietro and Belongie, Serge},\n"
        "  institution = {California Institute of Technology},\n"
        "  number = {CNS-TR-2011-001},\n"
        "  year = {2011}\n"
        "}"
    )
    protocol_docs = {"official": "The official train_test_split.txt: train (5,994) and test (5,794); no val split."}
    download_help = (
        f"fgvlm does not fetch it: download CUB_200_2011.tgz from Caltech ({PAGE}) and extract it under --root "
        f"(ROOT/{FOLDER}/images.txt, ...)."
    )

    def __init__(self, root=None, protocol: str = "official", on_bad_image: str = "error"):
        super().__init__(root if root is not None else "~/.cache/fgvlm/data", protocol, on_bad_image)
        self._folder = self.root if (self.root / "classes.txt").is_file() else self.root / FOLDER
        classes = read_table(self._folder / "classes.txt")
        if sorted(classes) != list(range(1, len(classes) + 1)):
            raise DatasetError(f"cub200: {self._folder / 'classes.txt'} must number its classes 1..{len(classes)}")
        self.class_names = [classes[i] for i in sorted(classes)]
        self._aliases = resource_json("cub200_aliases.json")["aliases"]

    def dataset_folder(self) -> Path:
        return self._folder

    def image_folder(self) -> Path:
        return self._folder / "images"

    @property
    def prompt_names(self) -> list[str]:
        return [display_name(name) for name in self.class_names]

    @property
    def aliases(self) -> dict[int, list[str]]:
        return {label: list(self._aliases.get(name, [])) for label, name in enumerate(self.class_names)}

    def list_records(self) -> dict[str, list[Record]]:
        images = read_table(self._folder / "images.txt")
        labels = read_table(self._folder / "image_class_labels.txt")
        is_train = read_table(self._folder / "train_test_split.txt")
        splits: dict[str, list[Record]] = {"train": [], "test": []}
        for image_id in sorted(images):
            if image_id not in labels or image_id not in is_train:
                raise DatasetError(f"cub200: image {image_id} of images.txt has no label or no train/test entry")
            label = int(labels[image_id]) - 1
            if not 0 <= label < len(self._class_names):
                raise DatasetError(f"cub200: image {image_id} has class {label + 1}, not in classes.txt")
            rel = Path(images[image_id])
            split = "train" if is_train[image_id] == "1" else "test"
            splits[split].append(Record(rel.with_suffix("").as_posix(), label, self.image_folder() / rel))
        return splits
