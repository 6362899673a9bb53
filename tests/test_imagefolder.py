"""ImageFolder on real Flowers102 images: layouts, seeded stratified split, split files, errors, bad images, CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from fgvlm.data import BadImageError, DatasetError, create_dataset
from fgvlm.data.imagefolder import ImageFolder, display_name

# 10, 5 and 1 images: with val 0.1 / test 0.2 -> test 2, 1, 0 and val 1, 1, 0 (round half up, train keeps >= 1).
CLASSES = {"001.pink_primrose": 10, "canterbury_bells": 5, "sweet_pea": 1}


def real_jpgs(flowers_mini: Path, count: int) -> list[Path]:
    return sorted((flowers_mini / "jpg").glob("*.jpg"))[:count]


def make_tree(root: Path, jpgs: list[Path], classes: dict[str, int]) -> list[str]:
    """Copy real images into root/<class>/; the 4th image of the first class becomes a PNG. Returns relative paths."""
    rels, source = [], iter(jpgs)
    for name, count in classes.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            jpg = next(source)
            if name == next(iter(classes)) and i == 3:
                target = root / name / f"img_{i:02d}.PNG"
                Image.open(jpg).save(target)
            else:
                target = root / name / f"img_{i:02d}.jpg"
                shutil.copyfile(jpg, target)
            rels.append(target.relative_to(root).as_posix())
    return rels


@pytest.fixture
def flat(tmp_path, flowers_mini) -> tuple[Path, list[str]]:
    root = tmp_path / "flat"
    rels = make_tree(root, real_jpgs(flowers_mini, 16), CLASSES)
    (root / "sweet_pea" / "notes.txt").write_text("not an image")
    (root / "sweet_pea" / ".hidden.jpg").write_bytes(b"ignored")
    return root, rels


def test_flat_layout_seeded_stratified_split(flat):
    root, rels = flat
    ds = create_dataset(dataset="imagefolder", root=str(root))
    assert ds.class_names == ["001.pink_primrose", "canterbury_bells", "sweet_pea"]
    assert ds.prompt_names == ["pink primrose", "canterbury bells", "sweet pea"]
    assert ds.split_sizes() == {"train": 7 + 3 + 1, "val": 1 + 1, "test": 2 + 1}
    records = {split: ds.split(split).records for split in ds.split_names}
    ids = [r.id for split in records.values() for r in split]
    assert sorted(ids) == sorted(rels)  # every image once, none twice
    assert all(r.label == ds.class_names.index(r.id.split("/")[0]) for split in records.values() for r in split)
    assert [r.label for r in records["test"]] == [0, 0, 1]
    sample = ds.split("train")[0]
    assert sample.image.mode == "RGB" and sample.image.size[0] > 100  # a real decoded photo
    again = ImageFolder(root)
    assert {s: again.split(s).ids for s in again.split_names} == {s: [r.id for r in v] for s, v in records.items()}
    reseeded = ImageFolder(root, seed=7)
    assert reseeded.split("test").ids != records["test"] or reseeded.split("val").ids != [r.id for r in records["val"]]
    info = ds.describe()
    assert info["layout"] == "flat" and (info["seed"], info["val_fraction"], info["test_fraction"]) == (0, 0.1, 0.2)


def test_stratified_split_per_class_is_independent_of_other_classes(flat, flowers_mini):
    root, _ = flat
    before = ImageFolder(root).split("test").ids
    make_tree(root, real_jpgs(flowers_mini, 20)[16:], {"wild_pansy": 4})
    after = ImageFolder(root).split("test").ids
    assert [i for i in after if not i.startswith("wild_pansy/")] == before
    no_val = ImageFolder(root, val_fraction=0.0)
    assert no_val.split_names == ["train", "test"]


def test_split_files_json_csv_tsv(flat):
    root, rels = flat
    split_json = root.parent / "split.json"
    split_json.write_text(json.dumps({rels[0]: "train", rels[1]: "validation", rels[10]: "test", rels[15]: "Train"}))
    ds = ImageFolder(root, split_file=str(split_json))
    assert {s: ds.split(s).ids for s in ds.split_names} == {
        "train": [rels[0], rels[15]], "val": [rels[1]], "test": [rels[10]]}  # fmt: skip
    assert ds.describe()["unlisted"] == len(rels) - 4

    split_csv = root.parent / "split.csv"
    split_csv.write_text(f"path,split\n# a comment\n{rels[2]},test\n\n{rels[11]}, train\n")
    ds = ImageFolder(root, split_file=split_csv)
    assert ds.split_sizes() == {"train": 1, "test": 1} and ds.split("test").ids == [rels[2]]

    split_tsv = root.parent / "split.tsv"
    split_tsv.write_text(f"{rels[2]}\ttrain\n{rels[3]}\tval\n")
    assert ImageFolder(root, split_file=split_tsv).split_sizes() == {"train": 1, "val": 1}


def test_split_file_errors_name_file_and_line(flat):
    root, rels = flat
    bad_csv = root.parent / "bad.csv"
    bad_csv.write_text(f"path,split\n{rels[0]},train\n{rels[1]},holdout\n")
    with pytest.raises(DatasetError, match=rf"{bad_csv} line 3: unknown split 'holdout'; use train, val or test"):
        ImageFolder(root, split_file=bad_csv).split("train")
    bad_json = root.parent / "bad.json"
    bad_json.write_text(json.dumps({rels[0]: "dev"}))
    with pytest.raises(DatasetError, match=rf"{bad_json} key '{rels[0]}': unknown split 'dev'"):
        ImageFolder(root, split_file=bad_json).split("train")
    missing = root.parent / "missing.json"
    missing.write_text(json.dumps({"sweet_pea/nope.jpg": "test"}))
    with pytest.raises(DatasetError, match=r"lists 1 path\(s\) that are not images .* sweet_pea/nope\.jpg"):
        ImageFolder(root, split_file=missing).split("test")
    wide = root.parent / "wide.tsv"
    wide.write_text(f"{rels[0]}\ttrain\textra\n")
    with pytest.raises(DatasetError, match="line 1: expected 2 columns"):
        ImageFolder(root, split_file=wide).split("train")


def test_pre_split_layout_is_detected(tmp_path, flowers_mini):
    root = tmp_path / "presplit"
    jpgs = real_jpgs(flowers_mini, 7)
    make_tree(root / "train", jpgs[:4], {"b_class": 2, "a_class": 2})
    make_tree(root / "validation", jpgs[4:5], {"a_class": 1})
    make_tree(root / "test", jpgs[5:], {"c_class": 2})
    ds = ImageFolder(root)
    assert ds.describe()["layout"] == "pre-split"
    assert ds.class_names == ["a_class", "b_class", "c_class"]
    assert ds.split_sizes() == {"train": 4, "val": 1, "test": 2}
    assert ds.split("train").ids[0] == "train/a_class/img_00.jpg" and ds.split("train").labels == [0, 0, 1, 1]
    assert ds.split("test").labels == [2, 2]
    with pytest.raises(DatasetError, match="already split into"):
        ImageFolder(root, split_file=tmp_path / "x.json")


def test_clear_errors(tmp_path, flat):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match=rf"no class folders in {empty}"):
        ImageFolder(empty)
    root, _ = flat
    (root / "zinnia_like").mkdir()
    (root / "zinnia_like" / "readme.txt").write_text("no pictures here")
    with pytest.raises(DatasetError, match=r"class folder .*zinnia_like has no images"):
        ImageFolder(root)
    with pytest.raises(DatasetError, match="not a folder"):
        ImageFolder(tmp_path / "absent")
    with pytest.raises(DatasetError, match="no root given"):
        create_dataset(dataset="imagefolder")
    with pytest.raises(DatasetError, match=r"unknown option\(s\) val_frac; known options: split_file, val_fraction"):
        create_dataset(dataset="imagefolder", root=str(root), options={"val_frac": 0.2})
    with pytest.raises(DatasetError, match=r"val_fraction \+ test_fraction must be < 1"):
        ImageFolder(root, val_fraction=0.5, test_fraction=0.5)


@pytest.fixture
def with_bad_images(tmp_path, flowers_mini) -> Path:
    root = tmp_path / "bad"
    make_tree(root, real_jpgs(flowers_mini, 4), {"alpha": 2, "beta": 2})
    (root / "alpha" / "corrupt.jpg").write_bytes(b"this is not a JPEG at all" * 40)
    data = (root / "beta" / "img_00.jpg").read_bytes()
    (root / "beta" / "truncated.jpg").write_bytes(data[: len(data) // 2])
    return root


def test_bad_images_error_names_file_and_dataset(with_bad_images):
    ds = ImageFolder(with_bad_images, val_fraction=0.0, test_fraction=0.0)
    train = ds.split("train")
    assert train.ids == ["alpha/corrupt.jpg", "alpha/img_00.jpg", "alpha/img_01.jpg",
                         "beta/img_00.jpg", "beta/img_01.jpg", "beta/truncated.jpg"]  # fmt: skip
    with pytest.raises(BadImageError, match=r"imagefolder: cannot read image .*alpha/corrupt\.jpg"):
        train[0]
    with pytest.raises(BadImageError, match=r"imagefolder: cannot read image .*beta/truncated\.jpg.*truncated"):
        train[5]


def test_bad_images_skipped_and_counted(with_bad_images):
    ds = create_dataset(dataset="imagefolder", root=str(with_bad_images), on_bad_image="skip",
                        options={"val_fraction": 0.0, "test_fraction": 0.0})  # fmt: skip
    train = ds.split("train")
    assert len(train) == 4 and all(s.image.mode == "RGB" for s in train)
    assert sorted(Path(entry["path"]).name for entry in ds.skipped) == ["corrupt.jpg", "truncated.jpg"]
    info = ds.describe()
    assert info["skipped_images"] == 2 and info["splits"] == {"train": 4}


def test_display_names():
    assert display_name("001.Black_footed_Albatross") == "Black footed Albatross"
    assert display_name("Boeing_737-800") == "Boeing 737-800"
    assert display_name("2012_Tesla_Model_S_Sedan") == "2012 Tesla Model S Sedan"  # a year is part of the name
    assert display_name("747") == "747" and display_name("707-320") == "707-320"


def test_cli_data_info(flat):
    from fgvlm.cli import app

    root, _ = flat
    result = CliRunner().invoke(app, ["data", "info", "--dataset", "imagefolder", "--root", str(root), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["num_classes"] == 3 and info["splits"] == {"train": 11, "val": 2, "test": 3}
    assert info["per_class"]["train"] == {"min": 1, "median": 3, "max": 7}
