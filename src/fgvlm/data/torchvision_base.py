"""Datasets read with torchvision's own dataset classes (Oxford-IIIT Pets, FGVC-Aircraft, Food-101, DTD, Stanford Cars).

torchvision parses each official layout (annotation files, split lists, class names); fgvlm only turns the result
into records: id = the image's path relative to the dataset's image folder without its extension, label, file. Root
is torchvision's root (the folder holding e.g. ``oxford-iiit-pet/``) or the dataset's own folder; default
``~/.cache/fgvlm/data``. Downloads fetch the archives torchvision's tables name (URL and md5) but extract them with
fgvlm's checked ``safe_extract``, never torchvision's unchecked one. torchvision is imported only when a dataset
is opened.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

from fgvlm.data.base import Dataset, DatasetError, Record

DEFAULT_ROOT = "~/.cache/fgvlm/data"


class TorchvisionDataset(Dataset):
    """A dataset whose splits are torchvision dataset objects; subclasses fill in the class attributes."""

    tv_class: str = ""
    """The torchvision.datasets class name."""
    folder: str = ""
    """The dataset's folder under torchvision's root (POSIX, may have two parts: DTD's ``dtd/dtd``)."""
    images: str = ""
    """The image folder under ``folder`` (split-file paths and record ids are relative to it)."""
    split_args: dict[str, dict[str, dict[str, Any]]] = {}
    """Own protocol -> our split -> keyword arguments of the torchvision class (``split=...``)."""
    layout: str = ""
    """The official layout in one line, for errors."""
    downloadable = True
    extract_into: str = ""
    """Where torchvision extracts the downloaded archives, under its root ('' = the root itself)."""

    def __init__(self, root=None, protocol: str = "official", on_bad_image: str = "error", **tv_options: Any):
        super().__init__(root if root is not None else DEFAULT_ROOT, protocol, on_bad_image)
        self.tv_options = tv_options
        self._tv = {split: self.open_split(args) for split, args in self.split_args[self.own_protocol].items()}
        classes = [list(tv.classes) for tv in self._tv.values()]
        if any(names != classes[0] for names in classes):
            raise DatasetError(f"{self.name}: the splits of {self.dataset_folder()} disagree on the class list")
        self.class_names = classes[0]

    def torchvision_root(self) -> Path:
        """The folder torchvision expects: ``root`` if it holds ``folder``, its parent(s) if ``root`` is ``folder``."""
        depth = len(PurePosixPath(self.folder).parts)
        for candidate in [self.root, *list(self.root.parents)[:depth]]:
            if (candidate / self.folder).is_dir():
                return candidate
        raise DatasetError(
            f"{self.name}: {self.root / self.folder} not found. Expected the official layout {self.layout} under "
            f"--root {self.root}. {self.download_hint()}"
        )

    @classmethod
    def download_hint(cls) -> str:
        return f"Fetch it with `fgvlm data download {cls.name} --root DIR`."

    @classmethod
    def download(cls, root=None, base_url: str | None = None, *, progress: bool = True) -> dict:
        """The archives torchvision's tables name, md5-checked where published, extracted safely under ``root``."""
        from fgvlm.data.download import download_archives

        if not cls.downloadable:
            raise DatasetError(f"{cls.name}: {cls.download_help}")
        target = Path(root if root is not None else DEFAULT_ROOT).expanduser() / cls.extract_into
        return download_archives(target, torchvision_archives(cls.tv_class), base_url, progress=progress)

    def dataset_folder(self) -> Path:
        return self.torchvision_root() / self.folder

    def image_folder(self) -> Path:
        return self.dataset_folder() / self.images

    def open_split(self, args: dict[str, Any]) -> Any:
        """One torchvision dataset object; its errors become one-line ``DatasetError``s naming the folder."""
        import torchvision.datasets

        cls = getattr(torchvision.datasets, self.tv_class)
        try:
            return cls(str(self.torchvision_root()), **args, **self.tv_options)
        except (RuntimeError, OSError, KeyError, ValueError) as err:
            raise DatasetError(
                f"{self.name}: torchvision's {self.tv_class} cannot read {self.dataset_folder()} ({args}): {err}. "
                f"Expected {self.layout}."
            ) from None

    def samples(self, tv: Any) -> list[tuple[Path, int]]:
        """(image file, label) pairs of one torchvision object; most keep them in ``_image_files``/``_labels``."""
        return [(Path(path), int(label)) for path, label in zip(tv._image_files, tv._labels, strict=True)]

    def list_records(self) -> dict[str, list[Record]]:
        folder = self.image_folder()
        return {
            split: [
                Record(path.relative_to(folder).with_suffix("").as_posix(), label, path)
                for path, label in self.samples(tv)
            ]
            for split, tv in self._tv.items()
        }

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), **self.tv_options}


def torchvision_archives(tv_class: str) -> list[tuple[str, str | None]]:
    """The (URL, md5) pairs a torchvision class downloads (its own tables; md5 None where it publishes none)."""
    import torchvision.datasets

    cls = getattr(torchvision.datasets, tv_class)
    if hasattr(cls, "_RESOURCES"):
        return [(url, md5) for url, md5 in cls._RESOURCES]
    return [(cls._URL, getattr(cls, "_MD5", None))]
