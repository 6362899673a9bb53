"""``fgvlm publish --dataset`` of real ``fgvlm prompts build`` output (real Flowers102 images, a MixUp/CutMix set and
a closed-qa set): the staged folder loads with ``datasets.load_dataset`` with the right rows and images, and its card
says the task mix, question wording, MixUp/CutMix settings, split protocol and citation."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from publish_fixtures import publish

from fgvlm.cli import main


def build(*argv) -> None:
    with pytest.raises(SystemExit) as code:
        main(["prompts", "build", *map(str, argv)])
    assert code.value.code == 0


@pytest.fixture(scope="module")
def instructions(tmp_path_factory, flowers_mini):
    """A folder with a mixcut train set (messages JSONL) and a closed-qa test set (llava JSON), swapped protocol."""
    folder = tmp_path_factory.mktemp("instructions")
    common = ["--dataset", "flowers102", "--root", flowers_mini, "--protocol", "swapped"]
    build(*common, "--task", "open-qa-mixcut", "--alpha", "0.4", "--limit", "4", "--out", folder / "mixcut.jsonl")
    build(*common, "--task", "closed-qa", "--task-option", "closed-qa.num_options=4", "--split", "test",
          "--limit", "3", "--format", "llava", "--out", folder / "closed-test.json")  # fmt: skip
    return folder


def test_build_record_is_written_beside_the_file_and_its_command_rebuilds_it(instructions, tmp_path):
    import shlex

    record = json.loads((instructions / "mixcut.build.json").read_text())
    assert record["dataset"]["dataset"] == "flowers102" and record["dataset"]["protocol"] == "swapped"
    assert record["tasks"] == {"open-qa-mixcut": 1.0} and record["counts"] == {"open-qa-mixcut": 4}
    assert record["mixcut"]["alpha"] == 0.4 and record["split"] == "train" and len(record["class_names"]) == 102
    assert "Nilsback" in record["citation"] and record["command"].startswith("fgvlm prompts build --dataset flowers102")
    closed = json.loads((instructions / "closed-test.build.json").read_text())
    argv = shlex.split(closed["command"])[3:]
    build(*argv[: argv.index("--out")], "--out", tmp_path / "again.json")
    assert (tmp_path / "again.json").read_bytes() == (instructions / "closed-test.json").read_bytes()


def test_dataset_folder_loads_with_datasets_with_rows_and_images(instructions, tmp_path, capsys):
    import datasets

    assert publish(instructions, "--dataset", "--repo-id", "my-org/flowers-instr", "--dry-run", "-o", tmp_path) == 0
    assert "data/open-qa-mixcut/train-00000-of-00001.parquet" in capsys.readouterr().out
    folder = tmp_path / "upload"
    mixcut = datasets.load_dataset(str(folder), "open-qa-mixcut", split="train", cache_dir=str(tmp_path / "c"))
    entries = [json.loads(line) for line in (instructions / "mixcut.jsonl").read_text().splitlines()]
    assert mixcut.num_rows == len(entries) == 4
    assert mixcut.features["label"].names[:2] == ["pink primrose", "hard-leaved pocket orchid"]
    for row, entry in zip(mixcut, entries, strict=True):
        assert row["id"] == entry["id"] and row["task"] == "open-qa-mixcut"
        assert row["question"] == entry["messages"][0]["content"][1]["text"]
        assert (
            row["answer"]
            == entry["messages"][1]["content"][0]["text"]
            == mixcut.features["label"].int2str(row["label"])
        )
        assert row["lam"] == entry["meta"]["lam"] and row["answer_b"] == entry["meta"]["answer_b"]
        assert json.loads(row["meta"]) == entry["meta"]
        source = Image.open(entry["messages"][0]["content"][0]["image_url"]["url"]).convert("RGB")
        assert np.array_equal(np.asarray(row["image"].convert("RGB")), np.asarray(source))
    closed = datasets.load_dataset(str(folder), "closed-qa", split="test", cache_dir=str(tmp_path / "c"))
    llava = json.loads((instructions / "closed-test.json").read_text())
    assert closed["id"] == [e["id"] for e in llava] and closed["answer"] == [
        e["conversations"][1]["value"] for e in llava
    ]
    assert all(row["lam"] is None and row["answer_b"] is None for row in closed)
    first = Image.open(llava[0]["image"]).convert("RGB")  # the original JPEG's bytes, embedded as they are
    assert np.array_equal(np.asarray(closed[0]["image"].convert("RGB")), np.asarray(first))


def test_dataset_card_says_mix_wording_mixcut_protocol_and_citation(instructions, tmp_path):
    from huggingface_hub import DatasetCard

    assert publish(instructions, "--dataset", "--repo-id", "my-org/flowers-instr", "--dry-run", "-o", tmp_path) == 0
    card = DatasetCard.load(tmp_path / "upload" / "README.md")
    configs = {c["config_name"]: c["data_files"] for c in card.data.to_dict()["configs"]}
    assert configs == {
        "closed-qa": [{"split": "test", "path": "data/closed-qa/test-*.parquet"}],
        "open-qa-mixcut": [{"split": "train", "path": "data/open-qa-mixcut/train-*.parquet"}],
    }
    text = card.text
    assert "| open-qa-mixcut | train | 4 | open-qa-mixcut 4 | train | 0 |" in text
    assert 'Template (options {"num_options": 4}):' in text and "{options}\n{instruction}" in text
    assert "alpha 0.4, mode both, prob 1.0, switch_prob 0.5" in text
    assert "`swapped`: train = tstid (6,149), val = valid, test = trnid (1,020)" in text
    assert "@inproceedings{nilsback2008automated," in text
    assert "--task open-qa-mixcut --alpha 0.4 --mixcut-mode both --mixcut-prob 1 --seed 0 --limit 4" in text


def test_limit_and_refusals(instructions, tmp_path, capsys, flowers_mini):
    import datasets

    assert publish(instructions / "mixcut.jsonl", "--dataset", "--repo-id", "o/n", "--limit", "2", "--dry-run",
                   "-o", tmp_path / "lim") == 0  # fmt: skip
    rows = datasets.load_dataset(str(tmp_path / "lim" / "upload"), split="train", cache_dir=str(tmp_path / "c"))
    assert rows.num_rows == 2
    assert publish(instructions / "mixcut.jsonl", "--repo-id", "o/n", "--dry-run", "-o", tmp_path / "a") == 2
    assert "publish it with --dataset" in capsys.readouterr().err
    other = tmp_path / "mixed"
    other.mkdir()
    for name in ("mixcut.jsonl", "mixcut.build.json"):
        (other / name).write_bytes((instructions / name).read_bytes())
    build("--dataset", "flowers102", "--root", flowers_mini, "--limit", "2", "--out", other / "official.jsonl")
    assert publish(other, "--dataset", "--repo-id", "o/n", "--dry-run", "-o", tmp_path / "b") == 2
    assert "different datasets or protocols (flowers102 (official), flowers102 (swapped))" in capsys.readouterr().err
    (other / "mixcut.build.json").unlink()
    assert publish(other, "--dataset", "--repo-id", "o/n", "--dry-run", "-o", tmp_path / "c2") == 2
    assert "mixcut.jsonl without a build record (.build.json)" in capsys.readouterr().err


def test_any_task_on_mixed_images_is_a_mixcut_set(tmp_path, flowers_mini):
    """Not only open-qa-mixcut: closed-qa-mixcut keeps its MixUp/CutMix settings in the build record (and so in the
    command that rebuilds it), its card shows closed-qa's template and its mixing; a run trained with
    ``images: mixcut`` or a -mixcut task names MixUp/CutMix in its model card's recipe."""
    from huggingface_hub import DatasetCard

    from fgvlm.publish.card import recipe_lines
    from fgvlm.publish.finetuned import RECIPE

    folder = tmp_path / "instructions"
    build("--dataset", "flowers102", "--root", flowers_mini, "--task", "closed-qa-mixcut", "--alpha", "0.3",
          "--limit", "3", "--out", folder / "closed-mix.jsonl")  # fmt: skip
    record = json.loads((folder / "closed-mix.build.json").read_text())
    assert record["mixcut"]["alpha"] == 0.3 and "--alpha 0.3 --mixcut-mode both" in record["command"]
    assert publish(folder, "--dataset", "--repo-id", "my-org/mix", "--dry-run", "-o", tmp_path / "pub") == 0
    text = DatasetCard.load(tmp_path / "pub" / "upload" / "README.md").text
    assert "### closed-qa-mixcut" in text and "{options}\n{instruction}" in text  # closed-qa's template
    assert "alpha 0.3, mode both" in text and "No record of this data is mixed" not in text
    mixcut = {"alpha": 1.0}
    mixed = [{"task": "closed-qa-mixcut"}, {"task": "open-qa", "images": "mixcut"}, {"mix": {"closed-qa-mixcut": 1}}]
    for config in ({**how, "mixcut": mixcut} for how in mixed):
        assert "MixUp/CutMix: `{'alpha': 1.0}`" in recipe_lines(config, RECIPE), config
    assert not any("MixUp" in line for line in recipe_lines({"task": "closed-qa", "mixcut": mixcut}, RECIPE))
