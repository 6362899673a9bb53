"""Stanford Cars: 196 car models (make, model, year), official train (8,144) / test (8,041), from local files.

The official download URL is dead, so fgvlm cannot fetch it: place the files in torchvision's layout,
``ROOT/stanford_cars/{cars_train/, cars_test/, devkit/cars_meta.mat, devkit/cars_train_annos.mat,
cars_test_annos_withlabels.mat}``, and torchvision reads them. Class names as the devkit gives them
("AM General Hummer SUV 2000"); CoOp writes the year first ("2000 AM General Hummer SUV"), which every class accepts
as an alias. CoOp's split file ``split_zhou_StanfordCars.json`` (6,509 / 1,635 / 8,041) goes in
``ROOT/stanford_cars/``; its paths ("cars_test/00001.jpg") are relative to that folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fgvlm.data.torchvision_base import TorchvisionDataset


def year_first(name: str) -> str:
    """CoOp's form of a Stanford Cars class name: the trailing year moved to the front."""
    *words, year = name.split(" ")
    return " ".join([year, *words]) if words and year.isdigit() else name


class StanfordCars(TorchvisionDataset):
    name = "stanford-cars"
    object_word = "car model"
    tv_class = "StanfordCars"
    folder = "stanford_cars"
    images = ""
    downloadable = False
    layout = (
        "stanford_cars/{cars_train/, cars_test/, devkit/cars_meta.mat, devkit/cars_train_annos.mat, "
        "cars_test_annos_withlabels.mat}"
    )
    protocols = ("official",)
    split_args = {"official": {"train": {"split": "train"}, "test": {"split": "test"}}}
    coop_split_file = "split_zhou_StanfordCars.json"
    citation = (
        "@inproceedings{krause20133d,\n"
        "  title = {3D Object Representations for Fine-Grained Categorization},\n"
        "  author = {Krause, Jonathan and Stark, Michael and Deng, Jia and Fei-Fei, Li},\n"
        "  booktitle = {4th International IEEE Workshop on 3D Representation and Recognition (3dRR-13)},\n"
        "  year = {2013}\n"
        "}"
    )
    coop_sizes = {"train": 6509, "val": 1635, "test": 8041}
    download_help = (
        "the official download URL is dead, so fgvlm cannot fetch it: obtain the files (cars_train/, cars_test/, "
        "devkit/, cars_test_annos_withlabels.mat) from a mirror you trust and place them in ROOT/stanford_cars/."
    )
    protocol_docs = {
        "official": "The official train (8,144) and test (8,041); no validation split.",
        "coop": "CoOp's split_zhou_StanfordCars.json (6,509 / 1,635 / 8,041).",
    }

    @classmethod
    def download_hint(cls) -> str:
        return "The official download URL is dead: place the files there yourself."

    def samples(self, tv: Any) -> list[tuple[Path, int]]:
        return [(Path(path), int(label)) for path, label in tv._samples]

    @property
    def aliases(self) -> dict[int, list[str]]:
        return {label: [year_first(name)] for label, name in enumerate(self.class_names) if year_first(name) != name}
