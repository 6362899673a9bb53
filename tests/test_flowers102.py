"""Flowers102 on the real data: protocols and sizes (mini images + full official metadata), slicing, names, bad images;
and that missing shared data fails under CI."""

from __future__ import annotations

import json
import shutil

import pytest
import scipy.io

from fgvlm.data import BadImageError, DatasetError, Split, create_dataset


@pytest.mark.parametrize(
    ("protocol", "mini", "full"),
    [
        ("official", {"train": 408, "val": 306, "test": 306}, {"train": 1020, "val": 1020, "test": 6149}),
        ("trainval", {"train": 714, "test": 306}, {"train": 2040, "test": 6149}),
        ("swapped", {"train": 306, "val": 306, "test": 408}, {"train": 6149, "val": 1020, "test": 1020}),
    ],
)
def test_protocol_sizes(flowers_mini, flowers_meta, protocol, mini, full):
    assert create_dataset(dataset="flowers102", root=flowers_mini, protocol=protocol).split_sizes() == mini
    assert create_dataset(dataset="flowers102", root=flowers_meta, protocol=protocol).split_sizes() == full


def test_records_labels_and_images_are_the_official_ones(flowers_mini):
    ds = create_dataset(dataset="flowers102", root=flowers_mini)
    labels = scipy.io.loadmat(flowers_mini / "imagelabels.mat")["labels"].ravel()
    test = ds.split("test")
    for record in test.records[:20]:
        assert record.label == labels[int(record.id) - 1] - 1
    sample = test[0]
    assert sample.image.mode == "RGB" and min(sample.image.size) == 192
    assert ds.class_names == json.loads((flowers_mini / "class_names.json").read_text())
    assert ds.num_classes == 102 and ds.per_class_counts("train") == {"min": 4, "median": 4.0, "max": 4}


def test_a_split_slices_like_a_sequence(flowers_mini):
    test = create_dataset(dataset="flowers102", root=flowers_mini).split("test")
    first_two = test[:2]
    assert isinstance(first_two, Split) and len(first_two) == 2 and first_two.ids == test.ids[:2]
    assert [s.id for s in first_two] == test.ids[:2] and [s.label for s in first_two] == test.labels[:2]
    assert first_two[1].image.tobytes() == test[1].image.tobytes()
    assert test[100:110:3].records == test.records[100:110:3] and test[-1:][0].id == test.ids[-1]


def test_missing_shared_data_fails_under_ci_and_skips_with_a_reason_otherwise(monkeypatch, tmp_path):
    from conftest import require_shared

    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"mini set not found at .*; CI is set"):
        require_shared(tmp_path / "setid.mat", "real Flowers102 mini set")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match=r"mini set not found at .*shared/data beside the repo"):
        require_shared(tmp_path / "setid.mat", "real Flowers102 mini set")
    (tmp_path / "setid.mat").write_bytes(b"")
    require_shared(tmp_path / "setid.mat", "real Flowers102 mini set")


def test_display_names_and_aliases():
    ds = create_dataset(dataset="flowers102", root="/nonexistent")
    lotus = ds.class_names.index("lotus lotus")
    assert ds.prompt_names[lotus] == "lotus" and "lotus lotus" in ds.aliases[lotus]
    assert "gerbera" in ds.aliases[ds.class_names.index("barbeton daisy")]
    assert "gladiolus" in ds.aliases[ds.class_names.index("sword lily")]
    assert len(set(ds.prompt_names)) == 102


def test_swapped_split_is_disjoint_and_covers_everything(flowers_meta):
    ds = create_dataset(dataset="flowers102", root=flowers_meta, protocol="swapped")
    ids = [set(ds.split(name).ids) for name in ("train", "val", "test")]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert sum(map(len, ids)) == 8189


def test_missing_files_and_unknown_protocol(tmp_path):
    with pytest.raises(DatasetError, match="imagelabels.mat not found.*fgvlm data download"):
        create_dataset(dataset="flowers102", root=tmp_path).split_sizes()
    with pytest.raises(DatasetError, match="unknown protocol 'swap'"):
        create_dataset(dataset="flowers102", root=tmp_path, protocol="swap")


def test_corrupt_image_errors_or_is_skipped_and_counted(flowers_mini, tmp_path):
    root = tmp_path / "flowers"
    shutil.copytree(flowers_mini, root, ignore=shutil.ignore_patterns("jpg"))
    (root / "jpg").mkdir()
    ds = create_dataset(dataset="flowers102", root=root)
    test_records = ds.split("test").records[:3]
    ids = [r.id for r in test_records]
    for record in test_records:
        shutil.copy(flowers_mini / "jpg" / record.path.name, root / "jpg" / record.path.name)
    data = (root / "jpg" / f"image_{ids[1]}.jpg").read_bytes()
    (root / "jpg" / f"image_{ids[1]}.jpg").write_bytes(data[: len(data) // 2])  # truncated JPEG
    (root / "jpg" / f"image_{ids[2]}.jpg").write_text("not an image")
    setid = {"trnid": [], "valid": [], "tstid": [[int(i) for i in ids]]}
    scipy.io.savemat(root / "setid.mat", setid)

    strict = create_dataset(dataset="flowers102", root=root)
    assert strict.split("test")[0].id == ids[0]
    with pytest.raises(BadImageError, match=rf"flowers102.*image_{ids[1]}\.jpg"):
        strict.split("test")[1]
    with pytest.raises(BadImageError, match=rf"flowers102.*image_{ids[2]}\.jpg"):
        strict.split("test")[2]

    lenient = create_dataset(dataset="flowers102", root=root, on_bad_image="skip")
    assert [s.id for s in lenient.split("test")] == [ids[0]]
    described = lenient.describe()
    assert described["skipped_images"] == 2 and described["splits"]["test"] == 1
    assert {s["id"] for s in described["skipped"]} == {ids[1], ids[2]}
