"""The field's protocols on every dataset: CoOp-format split files, k-shot training sets (Dassl's draw, checked by
hand), base-to-new class subsets; on the real Flowers102 mini set with split files written here in CoOp's format."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from dataset_fixtures import build_pets, colour_of, write_coop_file

from fgvlm.config import ConfigError, DataConfig
from fgvlm.data import DatasetError, Record, create_dataset
from fgvlm.data.base import dataset_identity
from fgvlm.data.protocols import class_subset, select_shots
from fgvlm.runs import RunConflictError, RunDir


def test_kshot_draw_is_dassls_by_hand():
    """Labels appear in the order 2, 0, 1; label 1 has fewer images than shots: Dassl keeps them all, drawing none."""
    labels = [2, 0, 2, 0, 1, 2, 0, 2, 0]
    train = [Record(f"t{i}", label) for i, label in enumerate(labels)]
    val = [Record(f"v{i}", label) for i, label in enumerate([0, 0, 0, 0, 0, 1, 2])]
    chosen = select_shots({"train": train, "val": val, "test": train}, shots=2, seed=1)
    # by hand: one random.Random(1); train groups in first-appearance order (2, 0, 1), then val's (0, 1, 2)
    rng = random.Random(1)
    by_hand = [*rng.sample(["t0", "t2", "t5", "t7"], 2), *rng.sample(["t1", "t3", "t6", "t8"], 2), "t4"]
    by_hand_val = [*rng.sample(["v0", "v1", "v2", "v3", "v4"], 2), "v5", "v6"]  # min(2, 4) = 2 per class
    assert [r.id for r in chosen["train"]] == by_hand == ["t2", "t5", "t1", "t3", "t4"]
    assert [r.id for r in chosen["val"]] == by_hand_val == ["v0", "v3", "v5", "v6"]
    assert chosen["test"] == train  # the test split is never sampled
    eight = select_shots({"val": [Record(f"v{i}", 0) for i in range(9)]}, shots=8, seed=3)
    assert len(eight["val"]) == 4  # validation: min(k, 4) per class


def test_base_and_new_halves_by_hand():
    assert class_subset(102, "base") == list(range(51)) and class_subset(102, "new") == list(range(51, 102))
    assert class_subset(5, "base") == [0, 1, 2] and class_subset(5, "new") == [3, 4]  # ceil(5 / 2) = 3
    assert class_subset(7, "all") is None


def test_subset_relabels_and_draws_the_original_class():
    full = create_dataset(dataset="synthflowers", options={"num_classes": 6, "images_per_class": [4, 2, 2]})
    new = create_dataset(
        dataset="synthflowers", classes="new", options={"num_classes": 6, "images_per_class": [4, 2, 2]}
    )
    assert new.class_names == full.class_names[3:] and new.num_classes == 3 and new.prompt_names == new.class_names
    test = new.split("test")
    assert test.labels == [0, 0, 1, 1, 2, 2] and test.ids == full.split("test").ids[6:]
    assert test[0].image.tobytes() == full.split("test")[6].image.tobytes()  # label 0 of new = class 3 of all
    assert new.attributes(0) == full.attributes(3)
    described = new.describe()
    assert described["classes"] == "new" and described["class_labels"] == [3, 4, 5] and described["num_classes"] == 3
    assert "classes" in dataset_identity(new) and "classes" not in dataset_identity(full)  # old cache keys hold
    shots = create_dataset(dataset="synthflowers", shots=2, options={"num_classes": 6, "images_per_class": [4, 2, 2]})
    assert dataset_identity(shots) == dataset_identity(full)  # the draw picks ids: the test split's cache is shared


def write_flowers_coop(root: Path, path: Path, rename: dict[str, str] | None = None) -> dict[str, list]:
    """A CoOp-format file over the mini set: train = trnid + valid (7/class), val = 1 tstid image per class, test =
    the other 2; class names as CoOp's cat_to_name gives them (optionally renamed)."""
    official = create_dataset(dataset="flowers102", root=str(root))
    names = official.class_names
    item = lambda r: [f"image_{r.id}.jpg", r.label, (rename or {}).get(names[r.label], names[r.label])]  # noqa: E731
    seen: set[int] = set()
    splits: dict[str, list] = {"train": [], "val": [], "test": []}
    splits["train"] = [item(r) for s in ("train", "val") for r in official.split(s).records]
    for record in official.split("test").records:
        splits["val" if record.label not in seen else "test"].append(item(record))
        seen.add(record.label)
    write_coop_file(path, splits)
    return splits


@pytest.fixture
def coop_root(flowers_mini, tmp_path):
    """The mini set's files linked into a folder that also holds a test-written split_zhou_OxfordFlowers.json."""
    root = tmp_path / "flowers"
    root.mkdir()
    for name in ("jpg", "imagelabels.mat", "setid.mat"):
        (root / name).symlink_to(flowers_mini / name)
    write_flowers_coop(flowers_mini, root / "split_zhou_OxfordFlowers.json", {"pink primrose": "Pink Primrose"})
    return root


def test_coop_split_kshot_and_base_new_on_flowers_mini(coop_root):
    coop = create_dataset(dataset="flowers102", root=str(coop_root), protocol="coop")
    assert coop.split_sizes() == {"train": 714, "val": 102, "test": 204} and coop.num_classes == 102
    official = create_dataset(dataset="flowers102", root=str(coop_root))
    assert set(coop.split("train").ids) == set(official.split("train").ids) | set(official.split("val").ids)
    four = create_dataset(dataset="flowers102", root=str(coop_root), protocol="coop", shots=4)
    assert four.per_class_counts("train") == {"min": 4, "median": 4, "max": 4}  # every class has 7: 4 each
    assert four.per_class_counts("val") == {"min": 1, "median": 1, "max": 1}  # one each: all of them
    assert four.split_sizes()["test"] == 204  # evaluation always uses the full test split
    again = create_dataset(dataset="flowers102", root=str(coop_root), protocol="coop", shots=4)
    other = create_dataset(dataset="flowers102", root=str(coop_root), protocol="coop", shots=4, shot_seed=2)
    ids = four.describe()["selected_ids"]
    assert ids == again.describe()["selected_ids"] and ids["train"] == four.split("train").ids
    assert other.describe()["selected_ids"]["train"] != ids["train"]
    base = create_dataset(dataset="flowers102", root=str(coop_root), protocol="coop", shots=4, classes="base")
    new = create_dataset(dataset="flowers102", root=str(coop_root), protocol="coop", shots=4, classes="new")
    assert (base.num_classes, new.num_classes) == (51, 51)
    assert base.class_names == official.class_names[:51] and new.class_names == official.class_names[51:]
    assert set(base.split("train").labels) == set(range(51)) and set(new.split("test").labels) == set(range(51))
    # the draw happens on all classes first (as CoOp), so base and new keep the 4-shot run's images
    assert set(base.split("train").ids) | set(new.split("train").ids) == set(ids["train"])
    assert base.describe()["split_file_sha256"].startswith("sha256:")


def test_split_file_errors_name_the_problem(coop_root, tmp_path):
    official = create_dataset(dataset="flowers102", root=str(coop_root))
    missing = tmp_path / "bare"
    missing.mkdir()
    for name in ("jpg", "imagelabels.mat", "setid.mat"):
        (missing / name).symlink_to(coop_root / name)
    with pytest.raises(DatasetError, match=r"split_zhou_OxfordFlowers.json not found\. .*not on the dataset's own "
                       r"server: download it from the links in CoOp's DATASETS.md .*and put it at "):  # fmt: skip
        create_dataset(dataset="flowers102", root=str(missing), protocol="coop").split("train")
    path = tmp_path / "f.json"

    def open_file() -> None:
        create_dataset(dataset="flowers102", root=str(coop_root), protocol="split-file", split_file=str(path)).split(
            "test"
        )

    write_flowers_coop(coop_root, path, {"pink primrose": "pink primula"})
    with pytest.raises(DatasetError, match=r"class name 'pink primula' in split file .*f.json maps to no class of"):
        open_file()
    splits = write_flowers_coop(coop_root, path, {"pink primrose": "Pink-Primrose"})  # compared normalised: fine
    open_file()
    first = next(i for i, item in enumerate(splits["test"]) if item[1] == 0)
    splits["test"][first][2] = "evening primrose"  # an alias of pink primrose beside its name: two names, one class
    write_coop_file(path, splits)
    with pytest.raises(DatasetError, match=r"names 'Pink-Primrose' and 'evening primrose' in .* both map to label 0"):
        open_file()
    splits = write_flowers_coop(coop_root, path)
    splits["test"][0][0] = "image_99999.jpg"
    write_coop_file(path, splits)
    with pytest.raises(DatasetError, match=r"lists 'image_99999.jpg' \(test\), which is not an image of flowers102"):
        open_file()
    splits["test"][0] = [f"image_{official.split('test').ids[0]}.jpg", 0, official.class_names[5]]
    write_coop_file(path, splits)
    with pytest.raises(DatasetError, match=r"labels 'image_\d+.jpg' .* but flowers102 labels it"):
        open_file()
    with pytest.raises(ConfigError, match="split-file and data.split_file go together"):
        DataConfig(dataset="flowers102", protocol="split-file")
    with pytest.raises(DatasetError, match="unknown protocol 'coop'; choose one of official"):
        create_dataset(dataset="synthflowers", protocol="coop")


def test_a_complete_coop_file_must_have_the_published_sizes(flowers_meta, tmp_path):
    """flowers102-meta lists all 8,189 images: a complete file is checked against 4,093 / 1,633 / 2,463."""
    root = tmp_path / "meta"
    root.mkdir()
    for name in ("imagelabels.mat", "setid.mat"):
        (root / name).symlink_to(flowers_meta / name)
    official = create_dataset(dataset="flowers102", root=str(root))
    everything = [r for split in ("train", "val", "test") for r in official.split(split).records]
    entry = lambda r: [f"image_{r.id}.jpg", r.label, official.class_names[r.label]]  # noqa: E731
    for sizes, ok in (((4093, 1633, 2463), True), ((4094, 1632, 2463), False)):
        cut = [0, sizes[0], sizes[0] + sizes[1], len(everything)]
        splits = {
            s: [entry(r) for r in everything[cut[i] : cut[i + 1]]] for i, s in enumerate(("train", "val", "test"))
        }
        write_coop_file(root / "split_zhou_OxfordFlowers.json", splits)
        coop = create_dataset(dataset="flowers102", root=str(root), protocol="coop")
        if ok:
            assert coop.split_sizes() == {"train": 4093, "val": 1633, "test": 2463}
        else:
            with pytest.raises(
                DatasetError, match=r"not CoOp's published \{'train': 4093, 'val': 1633, 'test': 2463\}"
            ):
                coop.split_sizes()
    splits["train"] = splits["train"][:100]  # an incomplete file: no size check
    write_coop_file(root / "split_zhou_OxfordFlowers.json", splits)
    assert create_dataset(dataset="flowers102", root=str(root), protocol="coop").split_sizes()["train"] == 100


def test_split_file_maps_coop_style_names_on_pets(tmp_path):
    """CoOp writes Pets breeds lower-case with underscores ('american_bulldog'): they map to torchvision's names."""
    root = build_pets(tmp_path / "data")
    pets = create_dataset(dataset="oxford-pets", root=str(root))
    coop_name = lambda label: pets.class_names[label].lower().replace(" ", "_")  # noqa: E731
    records = [r for s in ("train", "test") for r in pets.split(s).records]
    item = lambda r: [f"{r.id}.jpg", r.label, coop_name(r.label)]  # noqa: E731
    folder = root / "oxford-iiit-pet"
    write_coop_file(folder / "split_zhou_OxfordPets.json", {"train": [item(r) for r in records[:9]],
                    "val": [item(r) for r in records[9:12]], "test": [item(r) for r in records[12:]]})  # fmt: skip
    coop = create_dataset(dataset="oxford-pets", root=str(folder), protocol="coop", shots=2, classes="base")
    # val = the first 3 test images (A, A, B): min(2, 4) = 2 of A, the 1 of B; test = B, C, C: B alone is a base class
    assert coop.class_names == ["Abyssinian", "American Bulldog"]
    assert coop.split_sizes() == {"train": 4, "val": 3, "test": 1}
    assert all(colour_of(sample.image) == sample.label for sample in coop.split("train"))


def test_a_resumed_run_on_other_ids_is_refused(tmp_path):
    run = RunDir(tmp_path / "run")
    first = create_dataset(dataset="synthflowers", shots=2).describe()
    run.write_meta(command="eval", seed=0, dataset=first)
    run.write_meta(command="eval", seed=0, dataset=create_dataset(dataset="synthflowers", shots=2).describe())
    other = create_dataset(dataset="synthflowers", shots=2, shot_seed=5).describe()
    with pytest.raises(RunConflictError, match=r"run on other data .*selected_ids differ"):
        run.write_meta(command="eval", seed=0, dataset=other)
    assert json.loads((run / "meta.json").read_text())["dataset"]["selected_ids"] == first["selected_ids"]


def test_eval_refuses_to_resume_when_the_split_file_changed(coop_root, tmp_path):
    from fgvlm.eval.zeroshot import EvalConfig, evaluate
    from fgvlm.models.base import ModelConfig

    path = tmp_path / "split.json"
    splits = write_flowers_coop(coop_root, path)
    data = DataConfig(dataset="flowers102", root=str(coop_root), protocol="split-file", split_file=str(path), shots=2)
    cfg = EvalConfig(data=data, model=ModelConfig(name="dummy"), mode="rank", limit=3)
    metrics = evaluate(cfg, tmp_path / "run")
    header = (metrics["protocol"], metrics["shots"], metrics["shot_seed"], metrics["classes"])
    assert header == ("split-file", 2, 1, "all") and metrics["n"] == 3
    meta = json.loads((tmp_path / "run" / "meta.json").read_text())["dataset"]
    assert len(meta["selected_ids"]["train"]) == 204 and meta["split_file"] == str(path)
    (tmp_path / "run" / "done.json").unlink()  # partial again
    write_coop_file(path, {**splits, "train": splits["train"][1:]})  # same config, other file content
    with pytest.raises(RunConflictError, match=r"run on other data .*selected_ids, split_file_sha256 differ"):
        evaluate(cfg, tmp_path / "run")


def test_report_groups_by_protocol_pairs_base_and_new_and_compares_only_like_with_like(tmp_path):
    """Heads (on the deterministic dummy backbone) on all, base and new classes of a 2-shot synthflowers protocol."""
    from typer.testing import CliRunner

    from fgvlm.commands.head import app
    from fgvlm.report.export import task_name
    from fgvlm.report.protocols import harmonic_mean
    from fgvlm.report.rundirs import load_runs
    from fgvlm.report.tables import collect_rows, write_results_table

    common = ["train", "--model", "dummy", "--dataset", "synthflowers", "--steps", "40"]
    common += ["--set", "data.options={num_classes: 4, images_per_class: [6, 3, 3], image_size: 32}"]
    common += ["--set", f"cache_dir={tmp_path / 'cache'}", "--set", "eval_every=20", "--set", "data.shots=2"]
    for run_id, extra in {"all": [], "all-other": ["--set", "lr=0.01"], "base": ["--set", "data.classes=base"],
                          "new": ["--set", "data.classes=new"]}.items():  # fmt: skip
        result = CliRunner().invoke(app, [*common, *extra, "--out", str(tmp_path / "runs" / run_id)])
        assert result.exit_code == 0, result.output
    rows = {row.run_id: row for row in collect_rows([tmp_path / "runs"], reference="all")}
    assert (rows["base"].shots, rows["base"].shot_seed, rows["base"].classes) == (2, 1, "base")
    assert rows["all-other"].delta_n == 12 and rows["base"].delta is None and rows["new"].delta is None
    _, md = write_results_table(list(rows.values()), tmp_path / "table")
    text = md.read_text()
    assert "### synthflowers · official, 2-shot (seed 1)\n" in text and "2-shot (seed 1), base classes\n" in text
    b, n = rows["base"].accuracy, rows["new"].accuracy
    assert f"| {100 * b:.1f} | {100 * n:.1f} | {100 * harmonic_mean(b, n):.1f} | base / new |" in text
    assert harmonic_mean(0.8, 0.4) == pytest.approx(2 * 0.8 * 0.4 / 1.2) and harmonic_mean(0.0, 0.0) == 0.0
    base = next(run for run in load_runs([tmp_path / "runs"]) if run.run_id == "base")
    assert task_name(base) == "fgvlm_synthflowers_official_2shot_seed1_base_test_head"
