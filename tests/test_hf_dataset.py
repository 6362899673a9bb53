"""HFDataset, offline: datasets built here from real Flowers102 images, saved to disk or laid out as an image folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from fgvlm.data import BadImageError, DatasetError, create_dataset
from fgvlm.data.hf import HFDataset

datasets = pytest.importorskip("datasets")

NAMES = ["pink primrose", "globe thistle", "moon orchid"]


@pytest.fixture(scope="module")
def jpgs(flowers_mini) -> list[Path]:
    return sorted((flowers_mini / "jpg").glob("*.jpg"))[:10]


def rgb_bytes(path: Path) -> bytes:
    with Image.open(path) as img:
        return img.convert("RGB").tobytes()


@pytest.fixture(scope="module")
def saved(tmp_path_factory, jpgs) -> Path:
    """A DatasetDict (Image + ClassLabel) with train/validation/test, saved with save_to_disk."""
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=NAMES)})
    rows = {"train": (jpgs[:4], [0, 1, 2, 1]), "validation": (jpgs[4:6], [2, 0]), "test": (jpgs[6:8], [1, 1])}
    splits = {
        name: datasets.Dataset.from_dict({"image": [str(p) for p in paths], "label": labels}, features=features)
        for name, (paths, labels) in rows.items()
    }
    root = tmp_path_factory.mktemp("hf") / "saved"
    datasets.DatasetDict(splits).save_to_disk(str(root))
    return root


def test_saved_dataset_dict(saved, jpgs):
    ds = create_dataset(dataset="hf", root=str(saved))
    assert ds.class_names == NAMES and ds.num_classes == 3
    assert ds.split_sizes() == {"train": 4, "val": 2, "test": 2}
    assert ds.split("val").ids == ["validation:0", "validation:1"] and ds.split("val").labels == [2, 0]
    sample = ds.split("train")[1]
    assert (sample.id, sample.label) == ("train:1", 1)
    assert sample.image.mode == "RGB" and sample.image.tobytes() == rgb_bytes(jpgs[1])  # the very same pixels
    assert ds.split("test")[1].image.tobytes() == rgb_bytes(jpgs[7])
    info = ds.describe()
    assert info["split_map"] == {"train": "train", "val": "validation", "test": "test"}
    assert info["source"] == str(saved) and info["dataset"] == "hf"


def test_options_select_splits_and_rename_classes(saved):
    ds = HFDataset(path=str(saved), splits={"train": "validation", "test": "train"}, class_names=["a", "b", "c"])
    assert ds.split_names == ["train", "test"] and ds.class_names == ["a", "b", "c"]
    assert ds.split("test").ids[0] == "train:0" and ds.split("train").labels == [2, 0]
    with pytest.raises(DatasetError, match=r"\['dev'\] not among the dataset's splits"):
        HFDataset(saved, splits={"train": "dev"})
    with pytest.raises(DatasetError, match="uses one split twice"):
        HFDataset(saved, splits={"train": "train", "test": "train"})
    with pytest.raises(DatasetError, match="class_names has 2 names but the dataset has 3 classes"):
        HFDataset(saved, class_names=["a", "b"])
    with pytest.raises(DatasetError, match=r"split 'train' has no column 'img'; columns: image, label"):
        HFDataset(saved, image_column="img")
    with pytest.raises(DatasetError, match=r"unknown option\(s\) labels; known options: path, image_column"):
        create_dataset(dataset="hf", root=str(saved), options={"labels": "label"})
    with pytest.raises(DatasetError, match="no dataset given"):
        HFDataset()


def test_image_folder_loaded_with_load_dataset(tmp_path, jpgs):
    root = tmp_path / "folder"
    for split, classes in {"train": {"moon_orchid": jpgs[:2], "globe_thistle": jpgs[2:3]},
                           "test": {"moon_orchid": jpgs[3:4], "globe_thistle": jpgs[4:6]}}.items():  # fmt: skip
        for name, paths in classes.items():
            (root / split / name).mkdir(parents=True)
            for path in paths:
                shutil.copyfile(path, root / split / name / path.name)
    ds = HFDataset(root, cache_dir=str(tmp_path / "cache"))
    assert ds.class_names == ["globe_thistle", "moon_orchid"]
    assert ds.split_sizes() == {"train": 3, "test": 3}
    expected = {rgb_bytes(p): 1 for p in jpgs[:2]} | {rgb_bytes(jpgs[2]): 0}
    assert {s.image.tobytes(): s.label for s in ds.split("train")} == expected


def test_string_labels_custom_columns_single_saved_split(tmp_path, jpgs):
    table = datasets.Dataset.from_dict(
        {"picture": [str(p) for p in jpgs[:3]], "species": ["zeta", "alpha", "zeta"]},
        features=datasets.Features({"picture": datasets.Image(), "species": datasets.Value("string")}),
    )
    table.save_to_disk(str(tmp_path / "single"))
    ds = HFDataset(tmp_path / "single", image_column="picture", label_column="species")
    assert ds.class_names == ["alpha", "zeta"] and ds.split_names == ["train"]
    assert ds.split("train").labels == [1, 0, 1]
    assert ds.split("train")[2].image.tobytes() == rgb_bytes(jpgs[2])


def test_string_labels_follow_user_class_names_order(tmp_path, jpgs):
    """class_names orders the classes: "rose" is 0 and "daisy" is 1 although sorting would put daisy first."""
    table = datasets.Dataset.from_dict(
        {"image": [str(p) for p in jpgs[:3]], "label": ["rose", "daisy", "rose"]},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.Value("string")}),
    )
    table.save_to_disk(str(tmp_path / "named"))
    ds = HFDataset(tmp_path / "named", class_names=["rose", "daisy"])
    assert ds.class_names == ["rose", "daisy"]
    assert ds.split("train").labels == [0, 1, 0]
    assert [ds.class_names[s.label] for s in ds.split("train")] == ["rose", "daisy", "rose"]
    with pytest.raises(
        DatasetError, match=r"split 'train' row 1 has label 'daisy', which is not in option class_names"
    ):
        HFDataset(tmp_path / "named", class_names=["rose", "tulip"])


def test_integer_labels_need_names_and_must_be_in_range(tmp_path, jpgs):
    plain = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    table = datasets.Dataset.from_dict({"image": [str(p) for p in jpgs[:2]], "label": [0, 1]}, features=plain)
    datasets.DatasetDict({"train": table}).save_to_disk(str(tmp_path / "ints"))
    with pytest.raises(DatasetError, match=r"label column 'label' is .*int64.* give the option class_names"):
        HFDataset(tmp_path / "ints")
    assert HFDataset(tmp_path / "ints", class_names=["x", "y"]).split("train").labels == [0, 1]
    unlabelled = datasets.Dataset.from_dict({"image": [str(jpgs[0])], "label": [-1]}, features=plain)
    datasets.DatasetDict({"train": table, "test": unlabelled}).save_to_disk(str(tmp_path / "unlabelled"))
    with pytest.raises(DatasetError, match=r"split 'test' row 0 has label -1, not in 0\.\.1 \(unlabelled split\?"):
        HFDataset(tmp_path / "unlabelled", class_names=["x", "y"])
    assert HFDataset(tmp_path / "unlabelled", class_names=["x", "y"], splits={"train": "train"}).split_names == [
        "train"
    ]


@pytest.fixture(scope="module")
def with_broken(tmp_path_factory, jpgs) -> Path:
    """Row 1 holds bytes that are no image, row 2 a JPEG cut in half."""
    data = jpgs[2].read_bytes()
    cells = [jpgs[0].read_bytes(), b"definitely not an image" * 20, data[: len(data) // 2], jpgs[3].read_bytes()]
    images = [{"bytes": cell, "path": None} for cell in cells]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=NAMES[:2])})
    table = datasets.Dataset.from_dict({"image": images, "label": [0, 1, 0, 1]}, features=features)
    root = tmp_path_factory.mktemp("hf") / "broken"
    datasets.DatasetDict({"train": table}).save_to_disk(str(root))
    return root


def test_broken_image_names_dataset_and_row(with_broken, jpgs):
    train = HFDataset(with_broken).split("train")
    assert train[0].image.tobytes() == rgb_bytes(jpgs[0])
    with pytest.raises(BadImageError, match=rf"hf \({with_broken}\): cannot read the image of row train:1 \(column"):
        train[1]
    with pytest.raises(BadImageError, match=r"row train:2 .*truncated"):
        train[2]


def test_broken_images_skipped_and_counted(with_broken):
    ds = HFDataset(with_broken, on_bad_image="skip")
    assert ds.split("train").ids == ["train:0", "train:3"]
    assert [entry["id"] for entry in ds.skipped] == ["train:1", "train:2"]
    assert ds.describe()["skipped_images"] == 2 and ds.describe()["splits"] == {"train": 2}


def test_hub_id_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(DatasetError, match=r"hf: cannot load 'no-such-user/no-such-flowers'"):
        HFDataset("no-such-user/no-such-flowers")


def test_cli_data_info(saved):
    from fgvlm.cli import app

    result = CliRunner().invoke(app, ["data", "info", "--dataset", "hf", "--root", str(saved), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["num_classes"] == 3 and info["splits"] == {"train": 4, "val": 2, "test": 2}
