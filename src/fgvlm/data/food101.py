"""Food-101: 101 dishes, official train (75,750) / test (25,250), read with torchvision.

Layout (torchvision's): ``ROOT/food-101/images/<class>/<id>.jpg`` and ``ROOT/food-101/meta/{train,test}.json``.
Class names are the folder names ("apple_pie"), shown in prompts with spaces ("apple pie"). CoOp's split file
``split_zhou_Food101.json`` (50,500 / 20,200 / 30,300) goes in ``ROOT/food-101/``; its paths are relative to
``images/``.
"""

from __future__ import annotations

from fgvlm.data.torchvision_base import TorchvisionDataset


class Food101(TorchvisionDataset):
    name = "food101"
    object_word = "dish"
    tv_class = "Food101"
    folder = "food-101"
    images = "images"
    layout = "food-101/{images/<class>/*.jpg, meta/train.json, meta/test.json}"
    protocols = ("official",)
    split_args = {"official": {"train": {"split": "train"}, "test": {"split": "test"}}}
    coop_split_file = "split_zhou_Food101.json"
    citation = (
        "@inproceedings{bossard2014food,\n"
        "  title = {Food-101 -- Mining Discriminative Components with Random Forests},\n"
        "  author = {Bossard, Lukas and Guillaumin, Matthieu and Van Gool, Luc},\n"
        "  booktitle = {European Conference on Computer Vision (ECCV)},\n"
        "  year = {2014}\n"
        "}"
    )
    coop_sizes = {"train": 50500, "val": 20200, "test": 30300}
    protocol_docs = {
        "official": "The official train (75,750) and test (25,250); no validation split.",
        "coop": "CoOp's split_zhou_Food101.json (50,500 / 20,200 / 30,300).",
    }

    @property
    def prompt_names(self) -> list[str]:
        return [name.replace("_", " ") for name in self.class_names]
