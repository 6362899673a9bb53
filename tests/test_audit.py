"""Dataset audit on real images: the mini set end to end, planted duplicates/label conflict/corrupt file, and the
pair search and popcount math on hand-computed hashes."""

from __future__ import annotations

import json
import shutil

import imagehash
import numpy as np
import pytest
import scipy.io
from PIL import Image

from fgvlm.config import DataConfig
from fgvlm.data.audit import AuditConfig, find_close_pairs, popcount64, popcount_by_bytes, run_audit


def test_find_close_pairs_hand_computed():
    hashes = np.array([0x0, 0x7, 0x1, 0xFFFFFFFFFFFFFFFF, 0x7FFFFFFFFFFFFFFF, 0x3], dtype=np.uint64)
    expected = [(0, 2, 1), (0, 5, 2), (1, 2, 2), (1, 5, 1), (2, 5, 1), (3, 4, 1)]
    assert find_close_pairs(hashes, threshold=2) == expected
    assert find_close_pairs(hashes, threshold=2, block=2) == expected  # blocks of rows give the same pairs
    assert find_close_pairs(hashes, threshold=0) == []
    assert len(find_close_pairs(hashes, threshold=64)) == 15  # all 6*5/2 pairs


def test_popcount_paths_agree_with_python():
    values = np.random.default_rng(0).integers(0, 2**64, size=200, dtype=np.uint64)
    values[:3] = [0, 2**64 - 1, 2**63]
    expected = [bin(int(v)).count("1") for v in values]
    assert popcount64(values).tolist() == expected
    assert popcount_by_bytes(values).tolist() == expected
    assert popcount_by_bytes(values.reshape(20, 10)).shape == (20, 10)


def test_audit_cli_on_the_mini_set(tmp_path, flowers_mini, capsys):
    from fgvlm.cli import main

    out = tmp_path / "audit"
    with pytest.raises(SystemExit) as exit_:
        main(["data", "audit", "--dataset", "flowers102", "--root", str(flowers_mini), "--out", str(out)])
    assert exit_.value.code == 0
    report = json.loads((out / "audit.json").read_text())
    assert report["summary"] == {
        "images": 1020, "hashed": 1020, "unreadable": 0, "near_duplicate_pairs": 0, "byte_identical_pairs": 0,
        "within_split_pairs": 0, "cross_split_pairs": 0, "label_conflicts": 0, "images_in_near_duplicate_pairs": 0,
    }  # fmt: skip
    assert report["settings"] == {"hash": "dhash", "bits": 64, "threshold": 5}
    meta = json.loads((out / "meta.json").read_text())
    assert meta["command"] == "data audit" and meta["dataset"]["splits"] == {"train": 408, "val": 306, "test": 306}
    assert (out / "config.yaml").is_file() and Image.open(out / "duplicates.png").size[0] > 0
    assert "near duplicate pairs" in capsys.readouterr().out
    assert json.loads((out / "done.json").read_text())["wall_time_s"] > 0


def test_audit_limit_and_lifecycle(tmp_path, flowers_mini, capsys):
    """--limit caps every split; a complete audit is skipped on rerun, --no-resume moves it aside and redoes it."""
    from fgvlm.cli import main

    out = tmp_path / "audit"
    argv = ["data", "audit", "--dataset", "flowers102", "--root", str(flowers_mini), "--limit", "5", "-o", str(out)]
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 0
    report = json.loads((out / "audit.json").read_text())
    assert report["summary"]["images"] == 15  # 5 per split
    done = (out / "done.json").read_bytes()
    with pytest.raises(SystemExit):
        main(argv)
    assert "already complete" in capsys.readouterr().err and (out / "done.json").read_bytes() == done
    with pytest.raises(SystemExit):
        main([*argv, "--no-resume"])
    assert len(list(tmp_path.glob("audit.replaced-*"))) == 1 and (out / "done.json").is_file()


# Real mini images, each kept in its own split; planted ids use free slots of the official id range.
KEPT = {"trnid": [2, 17], "valid": [28, 74], "tstid": [94]}
COPY, RESIZED, CORRUPT = 8181, 8182, 8183


@pytest.fixture()
def planted(tmp_path, flowers_mini):
    """A flowers102 folder with an exact copy of image 2 under another label (val), a resized re-encoded copy under
    the same label (train) and a truncated JPEG (test)."""
    root = tmp_path / "planted"
    (root / "jpg").mkdir(parents=True)
    for image_id in (i for ids in KEPT.values() for i in ids):
        shutil.copy(flowers_mini / "jpg" / f"image_{image_id:05d}.jpg", root / "jpg")
    source = flowers_mini / "jpg" / "image_00002.jpg"
    shutil.copy(source, root / "jpg" / f"image_{COPY:05d}.jpg")
    with Image.open(source) as image:
        smaller = image.convert("RGB").resize((image.width * 3 // 5, image.height * 3 // 5), Image.Resampling.BILINEAR)
    smaller.save(root / "jpg" / f"image_{RESIZED:05d}.jpg", quality=55)
    data = (flowers_mini / "jpg" / "image_00017.jpg").read_bytes()
    (root / "jpg" / f"image_{CORRUPT:05d}.jpg").write_bytes(data[: len(data) // 3])

    labels = scipy.io.loadmat(flowers_mini / "imagelabels.mat")["labels"].copy()
    label_2 = int(labels[0, 1])
    labels[0, COPY - 1] = label_2 % 102 + 1  # a different class: the same photo under two labels
    labels[0, RESIZED - 1] = label_2
    scipy.io.savemat(root / "imagelabels.mat", {"labels": labels})
    ids = {"trnid": KEPT["trnid"] + [RESIZED], "valid": KEPT["valid"] + [COPY], "tstid": KEPT["tstid"] + [CORRUPT]}
    scipy.io.savemat(root / "setid.mat", {k: np.array([v], dtype=np.uint16) for k, v in ids.items()})
    return root, label_2 - 1


def test_audit_finds_planted_duplicates_label_conflict_and_corrupt_file(tmp_path, planted):
    root, label = planted
    cfg = AuditConfig(data=DataConfig(dataset="flowers102", root=str(root)))
    report = run_audit(
        cfg, tmp_path / "run", progress=False
    )  # on_bad_image="error", yet the corrupt file is reported, not raised

    resized_distance = imagehash.dhash(Image.open(root / "jpg" / "image_00002.jpg").convert("RGB")) - imagehash.dhash(
        Image.open(root / "jpg" / f"image_{RESIZED:05d}.jpg").convert("RGB")
    )
    assert resized_distance <= cfg.threshold
    assert report["summary"] == {
        "images": 8, "hashed": 7, "unreadable": 1, "near_duplicate_pairs": 3, "byte_identical_pairs": 1,
        "within_split_pairs": 1, "cross_split_pairs": 2, "label_conflicts": 2, "images_in_near_duplicate_pairs": 3,
    }  # fmt: skip
    pairs = {frozenset((p["a"]["id"], p["b"]["id"])): p for p in report["near_duplicates"]}
    assert set(pairs) == {
        frozenset(("00002", f"{COPY:05d}")),
        frozenset(("00002", f"{RESIZED:05d}")),
        frozenset((f"{COPY:05d}", f"{RESIZED:05d}")),
    }
    exact = pairs[frozenset(("00002", f"{COPY:05d}"))]
    assert exact["distance"] == 0 and exact["byte_identical"] and exact["label_conflict"]
    assert exact["split_relation"] == "cross"
    resized = pairs[frozenset(("00002", f"{RESIZED:05d}"))]
    assert resized["distance"] == resized_distance and not resized["byte_identical"]
    assert resized["split_relation"] == "within" and not resized["label_conflict"]
    assert {resized["a"]["label"], resized["b"]["label"]} == {label}
    assert resized["a"]["split"] == "train" and resized["a"]["path"].endswith(".jpg")
    assert [p["distance"] for p in report["near_duplicates"]] == sorted(
        p["distance"] for p in report["near_duplicates"]
    )

    (byte_twin,) = report["exact_duplicates"]
    assert {byte_twin["a"]["id"], byte_twin["b"]["id"]} == {"00002", f"{COPY:05d}"}
    assert byte_twin["sha256"] and len(byte_twin["sha256"]) == 64
    conflicts = {frozenset((p["a"]["id"], p["b"]["id"])) for p in report["label_conflicts"]}
    assert conflicts == {frozenset(("00002", f"{COPY:05d}")), frozenset((f"{COPY:05d}", f"{RESIZED:05d}"))}
    (bad,) = report["unreadable"]
    assert bad["id"] == f"{CORRUPT:05d}" and bad["split"] == "test" and f"image_{CORRUPT:05d}.jpg" in bad["error"]

    run = tmp_path / "run"
    assert json.loads((run / "audit.json").read_text()) == json.loads(json.dumps(report))
    assert json.loads((run / "meta.json").read_text())["audit"]["near_duplicate_pairs"] == 3
    sheet = Image.open(run / "duplicates.png")
    assert sheet.height > 3 * 160  # one row per pair


def test_audit_rejects_bad_settings():
    from fgvlm.config import ConfigError

    with pytest.raises(ConfigError, match="audit.hash"):
        AuditConfig(hash="md5")
    with pytest.raises(ConfigError, match="audit.threshold"):
        AuditConfig(threshold=64)
