"""The fine-grained sets beside Flowers102 (Oxford-IIIT Pets, FGVC-Aircraft, Food-101, DTD, Stanford Cars, CUB-200),
each read offline from a tiny tree in its real layout (``dataset_fixtures``), through torchvision where it has a class;
what each dataset class knows (object word, head prompt, aliases, download); `fgvlm eval`, `data info` and
`list datasets` on them."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

import pytest
from dataset_fixtures import CARS, FIXTURES, build_cars, build_cub, build_pets, colour_of, write_coop_file

from fgvlm.cli import main
from fgvlm.data import DatasetError, create_dataset
from fgvlm.data.cars import year_first
from fgvlm.eval.matching import get_matcher
from fgvlm.prompts import object_word
from fgvlm.registry import dataset_class, resource_json

OBJECT_WORDS = {
    "flowers102": "flower",
    "oxford-pets": "pet breed",
    "fgvc-aircraft": "aircraft model",
    "food101": "dish",
    "dtd": "texture",
    "stanford-cars": "car model",
    "cub200": "bird species",
}


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_:
        main(list(argv))
    out, err = capsys.readouterr()
    return exit_.value.code, out, err


@pytest.fixture(scope="module")
def trees(tmp_path_factory) -> dict[str, Path]:
    """Every fixture tree, built once for the module."""
    base = tmp_path_factory.mktemp("datasets")
    return {name: build(base / name) for name, (build, _, _) in FIXTURES.items()}


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_loads_from_its_real_layout(trees, name):
    _, sizes, classes = FIXTURES[name]
    ds = create_dataset(dataset=name, root=str(trees[name]))
    assert ds.split_sizes() == sizes and ds.class_names == classes and ds.num_classes == len(classes)
    for split in sizes:
        samples = list(ds.split(split))
        assert all(colour_of(s.image) == s.label for s in samples)  # each file's pixels belong to its label
        assert len(set(ds.split(split).ids)) == len(samples)
    folder = ds.dataset_folder()
    assert create_dataset(dataset=name, root=str(folder)).split_sizes() == sizes  # the dataset's own folder works too
    assert (
        object_word(name) == OBJECT_WORDS[name]
        and ds.head_prompt == f"What is the name of the {ds.object_word} in this image?"
    )
    assert not ds.offline and dataset_class(name).downloadable == (name not in ("stanford-cars", "cub200"))
    assert ds.citation.startswith("@") and ds.citation.rstrip().endswith("}")


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_a_missing_tree_is_a_one_line_error(tmp_path, name):
    with pytest.raises(DatasetError) as err:
        create_dataset(dataset=name, root=str(tmp_path)).split_sizes()
    assert name in str(err.value) and "\n" not in str(err.value) and str(tmp_path) in str(err.value)


def test_aircraft_levels_and_dtd_partitions(trees):
    family = create_dataset(
        dataset="fgvc-aircraft", root=str(trees["fgvc-aircraft"]), options={"annotation_level": "family"}
    )
    assert (
        family.class_names == ["A300", "Boeing 707", "Cessna 172"] and family.describe()["annotation_level"] == "family"
    )
    maker = create_dataset(
        dataset="fgvc-aircraft", root=str(trees["fgvc-aircraft"]), options={"annotation_level": "manufacturer"}
    )
    assert maker.class_names == ["Airbus", "Boeing", "Cessna"]
    official = create_dataset(dataset="fgvc-aircraft", root=str(trees["fgvc-aircraft"]))
    coop = create_dataset(dataset="fgvc-aircraft", root=str(trees["fgvc-aircraft"]), protocol="coop")
    assert coop.split("test").ids == official.split("test").ids  # CoOp uses the dataset's own split
    assert create_dataset(
        dataset="fgvc-aircraft", root=str(trees["fgvc-aircraft"]), protocol="trainval"
    ).split_sizes() == {"train": 12, "test": 6}
    first = create_dataset(dataset="dtd", root=str(trees["dtd"]))
    second = create_dataset(dataset="dtd", root=str(trees["dtd"]), options={"partition": 2})
    assert first.split("train").ids[:2] == ["banded/banded_0001", "banded/banded_0002"]
    assert second.split("train").ids[:2] == ["banded/banded_0006", "banded/banded_0005"]
    with pytest.raises(DatasetError, match="partition must be an integer in 1..10, got 11"):
        create_dataset(dataset="dtd", root=str(trees["dtd"]), options={"partition": 11})
    with pytest.raises(DatasetError, match="fgvc-aircraft: torchvision's FGVCAircraft cannot read"):
        create_dataset(dataset="fgvc-aircraft", root=str(trees["fgvc-aircraft"]), options={"annotation_level": "model"})


def test_names_prompts_and_aliases(trees):
    food = create_dataset(dataset="food101", root=str(trees["food101"]))
    assert food.prompt_names == ["apple pie", "baby back ribs", "caesar salad"]
    cub = create_dataset(dataset="cub200", root=str(trees["cub200"]))
    assert cub.prompt_names == ["Black footed Albatross", "Laysan Albatross", "Sayornis", "Geococcyx"]
    matcher = get_matcher(cub.prompt_names, cub.aliases, ignored_head_words=cub.ignored_head_words)
    assert matcher.match("This bird is a Greater Roadrunner.") == 3 and matcher.match("an eastern phoebe") == 2
    assert matcher.match("a black-footed albatross") == 0 and cub.ignored_head_words == ("bird", "species")
    table = resource_json("cub200_aliases.json")
    assert len(table["classes"]) == 200 and set(table["aliases"]) <= set(table["classes"])
    assert table["aliases"]["141.Artic_Tern"] == ["Arctic Tern"]
    cars = create_dataset(dataset="stanford-cars", root=str(trees["stanford-cars"]))
    assert year_first("AM General Hummer SUV 2000") == "2000 AM General Hummer SUV"
    assert cars.aliases[1] == ["2012 Acura RL Sedan"]


def test_stanford_cars_reads_coops_year_first_names(tmp_path):
    root = build_cars(tmp_path / "data")
    cars = create_dataset(dataset="stanford-cars", root=str(root))
    records = [r for split in ("train", "test") for r in cars.split(split).records]
    item = lambda r: [f"{r.id}.jpg", r.label, year_first(CARS[r.label])]  # noqa: E731  (CoOp's "2012 Acura RL Sedan")
    splits = {"train": [item(r) for r in records[:9]], "val": [], "test": [item(r) for r in records[9:]]}
    write_coop_file(root / "stanford_cars" / "split_zhou_StanfordCars.json", splits)
    coop = create_dataset(dataset="stanford-cars", root=str(root), protocol="coop")
    assert coop.split("train").ids == [r.id for r in records[:9]] and coop.split_sizes()["test"] == 6


def test_downloads_fetch_archives_once_and_extract_safely(tmp_path):
    """The torchvision-backed download: archives by URL (here file://) and md5, extracted with safe_extract, once."""
    from fgvlm.data.download import UnsafeArchiveError, download_archives

    tree = build_pets(tmp_path / "tree") / "oxford-iiit-pet"
    served = tmp_path / "served"
    served.mkdir()
    for part in ("images", "annotations"):
        with tarfile.open(served / f"{part}.tar.gz", "w:gz") as tar:
            tar.add(tree / part, arcname=part)
    archives = [(f"https://example.invalid/{n}.tar.gz", hashlib.md5((served / f"{n}.tar.gz").read_bytes()).hexdigest())
                for n in ("images", "annotations")]  # fmt: skip
    target = tmp_path / "root" / "oxford-iiit-pet"
    summary = download_archives(target, archives, served.as_uri(), progress=False)
    assert summary["downloaded"] == ["images.tar.gz", "annotations.tar.gz"] and summary["extracted"]
    assert create_dataset(dataset="oxford-pets", root=str(tmp_path / "root")).split_sizes() == {"train": 9, "test": 6}
    again = download_archives(target, archives, "file:///nowhere/", progress=False)  # nothing fetched: markers
    assert again["skipped"] == ["images.tar.gz", "annotations.tar.gz"] and not again["extracted"]
    with tarfile.open(served / "evil.tar.gz", "w:gz") as tar:
        info = tarfile.TarInfo("../outside.txt")
        tar.addfile(info)
    with pytest.raises(UnsafeArchiveError, match="climbs out"):
        download_archives(
            tmp_path / "evil", [("https://example.invalid/evil.tar.gz", None)], served.as_uri(), progress=False
        )
    assert not (tmp_path / "outside.txt").exists()


def test_stanford_cars_and_cub_say_where_to_get_the_files(capsys, tmp_path):
    code, _, err = run_cli(capsys, "data", "download", "cub200", "--root", str(tmp_path))
    assert code == 2 and "download CUB_200_2011.tgz from Caltech" in err
    code, _, err = run_cli(capsys, "data", "download", "stanford-cars", "--root", str(tmp_path))
    assert code == 2 and "official download URL is dead" in err and "split_zhou_StanfordCars.json" in err


def test_data_info_and_list_show_the_new_sets(capsys, trees):
    code, out, _ = run_cli(
        capsys,
        "data",
        "info",
        "-d",
        "cub200",
        "--root",
        str(trees["cub200"]),
        "--shots",
        "2",
        "--classes",
        "new",
        "--json",
    )
    info = json.loads(out)
    assert code == 0 and info["num_classes"] == 2 and info["splits"] == {"train": 4, "test": 4}
    assert info["class_counts"] == {
        "train": {"103.Sayornis": 2, "110.Geococcyx": 2},
        "test": {"103.Sayornis": 2, "110.Geococcyx": 2},
    }
    assert (info["shots"], info["shot_seed"], info["classes"], info["class_labels"]) == (2, 1, "new", [2, 3])
    every = create_dataset(dataset="cub200", root=str(trees["cub200"]), shots=2).describe()["selected_ids"]["train"]
    assert info["selected_ids"]["train"] == every[4:]  # drawn on all four classes first, as CoOp does, then subset
    code, out, _ = run_cli(capsys, "data", "info", "-d", "food101", "--root", str(trees["food101"]))
    assert code == 0 and "apple_pie" in out and "images per class" in out
    code, out, _ = run_cli(capsys, "list", "datasets", "--json")
    listed = json.loads(out)
    assert {name: listed[name]["object word"] for name in OBJECT_WORDS} == OBJECT_WORDS
    assert listed["synthflowers"]["offline"] == "yes" and listed["stanford-cars"]["download"] == "local files"
    assert "coop" in listed["oxford-pets"]["protocols"] and listed["cub200"]["coop split file"] == "-"


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_fgvlm_eval_end_to_end_with_a_tiny_model(capsys, trees, use_tiny_cache, tmp_path, name):
    out = tmp_path / "run"
    args = [
        "eval",
        "--model",
        "tiny-qwen3-vl",
        "-d",
        name,
        "--root",
        str(trees[name]),
        "--mode",
        "rank",
        "--limit",
        "2",
    ]
    code, _, err = run_cli(capsys, *args, "--set", "data.classes=base", "--out", str(out))
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    classes = FIXTURES[name][2]
    assert metrics["dataset"] == name and metrics["n"] == 2 and metrics["classes"] == "base"
    assert metrics["num_classes"] == (len(classes) + 1) // 2
    meta = json.loads((out / "meta.json").read_text())
    assert f"the {OBJECT_WORDS[name]} in this image" in meta["prompt"]["text"]
    lines = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert all(0 <= line["pred"] < metrics["num_classes"] for line in lines)


def test_cub_root_may_be_its_own_folder(tmp_path):
    root = build_cub(tmp_path)
    assert create_dataset(dataset="cub200", root=str(root / "CUB_200_2011")).split_sizes() == {"train": 12, "test": 8}
