"""Oxford-IIIT Pets: 37 cat and dog breeds, official trainval (3,680) / test (3,669), read with torchvision.

Layout (torchvision's): ``ROOT/oxford-iiit-pet/images/<Breed_name>_<n>.jpg`` and
``ROOT/oxford-iiit-pet/annotations/{trainval,test}.txt`` (lines ``<image> <class id> <species> <breed id>``).
Class names as torchvision gives them ("American Bulldog"). CoOp's split file ``split_zhou_OxfordPets.json``
(2,944 / 736 / 3,669) goes in ``ROOT/oxford-iiit-pet/``; its paths are relative to ``images/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fgvlm.data.torchvision_base import TorchvisionDataset


class OxfordPets(TorchvisionDataset):
    name = "oxford-pets"
    object_word = "pet breed"
    tv_class = "OxfordIIITPet"
    folder = "oxford-iiit-pet"
    images = "images"
    extract_into = "oxford-iiit-pet"
    layout = "oxford-iiit-pet/{images/*.jpg, annotations/trainval.txt, annotations/test.txt}"
    protocols = ("official",)
    split_args = {"official": {"train": {"split": "trainval"}, "test": {"split": "test"}}}
    coop_split_file = "split_zhou_OxfordPets.json"
    citation = (
        "@inproceedings{parkhi2012cats,\n"
        "  title = {Cats and Dogs},\n"
        "  author = {Parkhi, Omkar M. and Vedaldi, Andrea and Zisserman, Andrew and Jawahar, C. V.},\n"
        "  booktitle = {IEEE Conference on Computer Vision and Pattern Recognition (CVPR)},\n"
        "  year = {2012}\n"
        "}"
    )
    coop_sizes = {"train": 2944, "val": 736, "test": 3669}
    protocol_docs = {
        "official": "The official trainval (3,680) as train and test (3,669); no validation split.",
        "coop": "CoOp's split_zhou_OxfordPets.json (2,944 / 736 / 3,669).",
    }

    def samples(self, tv: Any) -> list[tuple[Path, int]]:
        return [(Path(path), int(label)) for path, label in zip(tv._images, tv._labels, strict=True)]
