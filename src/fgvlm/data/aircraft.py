"""FGVC-Aircraft (2013b): 100 variants (or 70 families, 30 manufacturers), official train / val / test
(3,334 / 3,333 / 3,333), read with torchvision.

Layout (torchvision's): ``ROOT/fgvc-aircraft-2013b/data/images/<id>.jpg``, ``data/variants.txt`` (families.txt,
manufacturers.txt) and ``data/images_<level>_{train,val,trainval,test}.txt``. Option ``annotation_level``:
``variant`` (default, what the papers report), ``family`` or ``manufacturer``. CoOp uses the dataset's own split, so
protocol ``coop`` is the official one.
"""

from __future__ import annotations

from fgvlm.data.torchvision_base import TorchvisionDataset

OFFICIAL = {"train": {"split": "train"}, "val": {"split": "val"}, "test": {"split": "test"}}


class FGVCAircraft(TorchvisionDataset):
    name = "fgvc-aircraft"
    object_word = "aircraft model"
    tv_class = "FGVCAircraft"
    folder = "fgvc-aircraft-2013b"
    images = "data/images"
    layout = "fgvc-aircraft-2013b/data/{images/*.jpg, variants.txt, images_variant_{train,val,test}.txt}"
    protocols = ("official", "trainval", "coop")
    split_args = {
        "official": OFFICIAL,
        "coop": OFFICIAL,
        "trainval": {"train": {"split": "trainval"}, "test": {"split": "test"}},
    }
    citation = (
        "@article{maji2013fine,\n"
        "  title = {Fine-Grained Visual Classification of Aircraft},\n"
        "  author = {Maji, Subhransu and Rahtu, Esa and Kannala, Juho and Blaschko, Matthew and Vedaldi, Andrea},\n"
        "  journal = {arXiv preprint arXiv:1306.5151},\n"
        "  year = {2013}\n"
        "}"
    )
    protocol_docs = {
        "official": "The official train / val / test (3,334 / 3,333 / 3,333).",
        "trainval": "train = the official trainval (6,667), test = test; no validation split.",
        "coop": "CoOp uses the dataset's own split: the same as official.",
    }

    def __init__(self, root=None, protocol: str = "official", on_bad_image: str = "error", annotation_level="variant"):
        super().__init__(root, protocol, on_bad_image, annotation_level=annotation_level)
