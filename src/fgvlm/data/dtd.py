"""DTD, the Describable Textures Dataset: 47 textures, official train / val / test of 1,880 each per partition
(option ``partition``, 1-10, default 1), read with torchvision.

Layout (torchvision's): ``ROOT/dtd/dtd/images/<class>/<image>.jpg`` and ``ROOT/dtd/dtd/labels/{train,val,test}<N>.txt``
(the archive ``dtd-r1.0.1.tar.gz`` extracted into ``ROOT/dtd``). CoOp's split file
``split_zhou_DescribableTextures.json`` (2,820 / 1,128 / 1,692) goes in ``ROOT/dtd/dtd/``; its paths are relative
to ``images/``.
"""

from __future__ import annotations

from fgvlm.data.base import DatasetError
from fgvlm.data.torchvision_base import TorchvisionDataset


class DTD(TorchvisionDataset):
    name = "dtd"
    object_word = "texture"
    tv_class = "DTD"
    folder = "dtd/dtd"
    images = "images"
    extract_into = "dtd"
    layout = "dtd/dtd/{images/<class>/*.jpg, labels/train1.txt, labels/val1.txt, labels/test1.txt}"
    protocols = ("official",)
    split_args = {"official": {"train": {"split": "train"}, "val": {"split": "val"}, "test": {"split": "test"}}}
    coop_split_file = "split_zhou_DescribableTextures.json"
    citation = (
        "@inproceedings{cimpoi2014describing,\n"
        "  title = {Describing Textures in the Wild},\n"
        "  author = {Cimpoi, Mircea and Maji, Subhransu and Kokkinos, Iasonas and Mohamed, Sammy and "
        "Vedaldi, Andrea},\n"
        "  booktitle = {IEEE Conference on Computer Vision and Pattern Recognition (CVPR)},\n"
        "  year = {2014}\n"
        "}"
    )
    coop_sizes = {"train": 2820, "val": 1128, "test": 1692}
    protocol_docs = {
        "official": "The official train / val / test of the chosen partition (1,880 each).",
        "coop": "CoOp's split_zhou_DescribableTextures.json (2,820 / 1,128 / 1,692).",
    }

    def __init__(self, root=None, protocol: str = "official", on_bad_image: str = "error", partition: int = 1):
        if not isinstance(partition, int) or not 1 <= partition <= 10:
            raise DatasetError(f"dtd: option partition must be an integer in 1..10, got {partition!r}")
        super().__init__(root, protocol, on_bad_image, partition=partition)
