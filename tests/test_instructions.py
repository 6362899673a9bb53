"""Instruction data: MixUp/CutMix by hand, the builder against evaluation's prompts, exports and the CLI end to end."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fgvlm.cli import main
from fgvlm.config import ConfigError
from fgvlm.data import create_dataset
from fgvlm.eval.scoring import TaskScorer
from fgvlm.prompts import object_word
from fgvlm.prompts.instructions import (
    InstructionRecord,
    assign_tasks,
    build_instructions,
    check_tasks,
    export_instructions,
    parse_mix,
)
from fgvlm.prompts.mixcut import MixCutOptions, cutmix_box, cutmix_images, mix_images, mixup_images


def solid(color: tuple[int, int, int], size: tuple[int, int] = (8, 6)) -> Image.Image:
    return Image.new("RGB", size, color)


@pytest.fixture(scope="module")
def synth():
    return create_dataset(dataset="synthflowers")


# -- mixcut -------------------------------------------------------------------------------------------------------
def test_mixup_pixels_by_hand() -> None:
    mixed = np.asarray(mixup_images(solid((200, 0, 100)), solid((0, 100, 40)), 0.25))
    assert mixed.shape == (6, 8, 3)
    assert (mixed == [50, 75, 55]).all()  # 0.25 * a + 0.75 * b per channel
    resized = np.asarray(mixup_images(solid((200, 0, 100)), solid((0, 100, 40), (3, 2)), 0.25))
    assert resized.shape == (6, 8, 3) and (resized == [50, 75, 55]).all()  # b resized to a's size


def test_cutmix_pixels_by_hand() -> None:
    b = np.arange(6 * 8 * 3, dtype=np.uint8).reshape(6, 8, 3)
    mixed = np.asarray(cutmix_images(solid((9, 9, 9)), Image.fromarray(b), (1, 2, 4, 5)))
    assert (mixed[2:5, 1:4] == b[2:5, 1:4]).all()  # rows y0..y1-1, columns x0..x1-1 from b
    assert (mixed[0, 0] == 9).all() and (mixed[5, 4] == 9).all() and (mixed[2, 4] == 9).all()
    assert (mixed != 9).any(axis=2).sum() == 9  # exactly the 3 x 3 box changed (b has no (9, 9, 9) pixel there)


def test_cutmix_box_corrects_lambda_to_the_area_cut() -> None:
    sizes, lams = set(), set()
    for seed in range(60):
        box, lam = cutmix_box((8, 8), 0.75, np.random.default_rng(seed))
        x0, y0, x1, y1 = box
        assert 0 <= x0 <= x1 <= 8 and 0 <= y0 <= y1 <= 8
        assert lam == 1 - (x1 - x0) * (y1 - y0) / 64
        sizes.add((x1 - x0, y1 - y0))
        lams.add(lam)
    # side int(8 * sqrt(1 - 0.75)) = 4: a whole 4 x 4 box keeps lambda 0.75; a box clipped to 2 x 4 gives 0.875
    assert (4, 4) in sizes and max(w for w, _ in sizes) == 4 and 0.75 in lams and 0.875 in lams
    assert cutmix_box((8, 8), 1.0, np.random.default_rng(0))[1] == 1.0  # nothing cut


def test_mix_images_is_deterministic_and_leaves_global_numpy_alone() -> None:
    a, b = solid((250, 10, 10), (16, 12)), solid((10, 10, 250), (16, 12))
    np.random.seed(123)
    expected_next = np.random.random()
    np.random.seed(123)
    first = mix_images(a, b, np.random.default_rng(7), MixCutOptions(mode="cutmix"))
    assert np.random.random() == expected_next
    again = mix_images(a, b, np.random.default_rng(7), MixCutOptions(mode="cutmix"))
    assert (first.box, first.lam) == (again.box, again.lam) and first.image.tobytes() == again.image.tobytes()
    assert first.mode == "cutmix" and np.asarray(first.image).tobytes() == cutmix_images(a, b, first.box).tobytes()
    mixup = mix_images(a, b, np.random.default_rng(7), MixCutOptions(mode="mixup", alpha=0.4))
    assert mixup.box is None and mixup.image.tobytes() == mixup_images(a, b, mixup.lam).tobytes()
    picks = {mix_images(a, b, np.random.default_rng(s), MixCutOptions(mode="both")).mode for s in range(20)}
    assert picks == {"mixup", "cutmix"}


@pytest.mark.parametrize("bad", [{"mode": "mosaic"}, {"alpha": 0}, {"prob": 1.5}])
def test_mixcut_options_refuse_bad_values(bad) -> None:
    with pytest.raises(ValueError, match=str(next(iter(bad.values())))):
        MixCutOptions(**bad)


# -- task choice --------------------------------------------------------------------------------------------------
def test_parse_mix_and_unknown_tasks_name_the_value() -> None:
    assert parse_mix("open-qa=0.5, closed-qa=0.3,closed-negative-qa=0.2") == {
        "open-qa": 0.5,
        "closed-qa": 0.3,
        "closed-negative-qa": 0.2,
    }
    for text in ("open-qa", "open-qa=half", "open-qa=-1", ""):
        with pytest.raises(ConfigError, match="mix"):
            parse_mix(text)
    with pytest.raises(ConfigError, match="'open-vqa'"):
        check_tasks("open-vqa")
    with pytest.raises(ConfigError, match="'closed-qa2'"):
        check_tasks({"open-qa": 1, "closed-qa2": 1})
    assert check_tasks({"open-qa": 3, "open-qa-mixcut": 1, "closed-qa": 0}) == {"open-qa": 0.75, "open-qa-mixcut": 0.25}


def test_assign_tasks_exact_shares() -> None:
    tasks = assign_tasks(100, {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}, seed=0)
    assert sorted(tasks.count(t) for t in "abc") == [33, 33, 34]
    assert assign_tasks(100, {"a": 0.5, "b": 0.5}, 1) == assign_tasks(100, {"a": 0.5, "b": 0.5}, 1)
    assert assign_tasks(100, {"a": 0.5, "b": 0.5}, 1) != assign_tasks(100, {"a": 0.5, "b": 0.5}, 2)


# -- the builder --------------------------------------------------------------------------------------------------
MIX = {"open-qa": 0.4, "closed-qa": 0.3, "closed-negative-qa": 0.2, "open-qa-mixcut": 0.1}


def test_mix_proportions_and_questions_equal_evaluation(synth, tmp_path) -> None:
    records = build_instructions(synth, "train", MIX, seed=3, out_dir=tmp_path, limit=100)
    counts = {task: sum(r.task == task for r in records) for task in MIX}
    assert counts == {"open-qa": 40, "closed-qa": 30, "closed-negative-qa": 20, "open-qa-mixcut": 10}
    split = synth.split("train")
    for record, source in zip(records, split.records[:100], strict=True):
        assert (record.id, record.label) == (source.id, source.label)
        task = "open-qa" if record.task == "open-qa-mixcut" else record.task
        scorer = TaskScorer(task, synth, None, {"object": object_word("synthflowers")}, 3)
        prompt = scorer.prompt(source)
        assert record.question == prompt.text
        if record.task == "closed-qa":  # the key evaluation ranks and its matcher maps back to the true class
            assert record.answer == prompt.answer and scorer.parse(record.answer, prompt)[0] == source.label
        elif record.task == "closed-negative-qa":
            assert record.answer == ("yes" if prompt.is_positive else "no")
            assert record.extra == {"candidate": prompt.candidate, "is_positive": prompt.is_positive}
        else:
            assert record.answer == synth.prompt_names[source.label]


def test_family_wording_and_task_options_follow_evaluation(flowers_mini) -> None:
    flowers = create_dataset(dataset="flowers102", root=flowers_mini)
    options = {"closed-qa": {"num_options": 5, "distractors": "hard"}}
    records = build_instructions(
        flowers, "train", "closed-qa", seed=1, family="instructblip", task_options=options, limit=5
    )
    scorer = TaskScorer("closed-qa", flowers, "instructblip", {"object": "flower", **options["closed-qa"]}, 1)
    for record, source in zip(records, flowers.split("train").records[:5], strict=True):
        assert record.question == scorer.prompt(source).text and record.question.startswith("Question:")
        assert record.answer in "ABCDE" and record.image == str(source.path.resolve())
    with pytest.raises(ConfigError, match="num_options"):
        build_instructions(flowers, "train", "closed-qa", task_options={"closed-qa": {"num_options": 500}}, limit=1)
    with pytest.raises(ConfigError, match="open-qa-mixcut"):
        build_instructions(flowers, "train", "open-qa", task_options={"open-qa-mixcut": {}}, limit=1)


def test_mixcut_pairs_lambda_and_box_match_the_written_image(synth, tmp_path) -> None:
    records = build_instructions(synth, "train", "open-qa-mixcut", seed=5, out_dir=tmp_path, limit=24)
    split = {r.id: r for r in synth.split("train").records}
    assert {r.extra["mode"] for r in records} == {"mixup", "cutmix"}
    for record in records:
        a, b = (split[i] for i in record.pair)
        assert record.pair[0] == record.id and a.label == record.label != b.label == record.label_b
        assert record.answer_b == synth.prompt_names[b.label] and Path(record.image).parent == tmp_path / "mixcut"
        image_a, image_b = synth.load_image(a), synth.load_image(b)
        if record.extra["mode"] == "cutmix":
            x0, y0, x1, y1 = record.box
            assert record.lam == pytest.approx(1 - (x1 - x0) * (y1 - y0) / (image_a.width * image_a.height))
            expected = cutmix_images(image_a, image_b, record.box)
        else:
            assert record.box is None and 0 <= record.lam <= 1
            expected = mixup_images(image_a, image_b, record.lam)
        assert record.load_image().tobytes() == expected.tobytes()


def test_mixcut_is_per_image_and_prob_zero_leaves_images_alone(synth, tmp_path) -> None:
    few = build_instructions(synth, "train", "open-qa-mixcut", seed=5, out_dir=tmp_path / "a", limit=3)
    more = build_instructions(synth, "train", "open-qa-mixcut", seed=5, out_dir=tmp_path / "b", limit=6)
    assert [(r.pair, r.lam, r.box) for r in few] == [(r.pair, r.lam, r.box) for r in more[:3]]
    plain = build_instructions(synth, "train", "open-qa-mixcut", mixcut=MixCutOptions(prob=0.0), limit=2)
    assert [(r.lam, r.pair, r.answer_b) for r in plain] == [(1.0, None, None)] * 2
    assert plain[0].image.tobytes() == synth.split("train")[0].image.tobytes()  # in memory: no out_dir
    with pytest.raises(ValueError, match="in memory"):
        export_instructions(plain, "messages", tmp_path / "x.jsonl")


def test_mixcut_is_an_image_option_of_every_task(synth) -> None:
    """closed-qa-mixcut: the partner is one of the options shown and answer_b is ITS option key in the same
    question; closed-negative-qa-mixcut: answer_b is yes exactly when the partner is the candidate asked about."""
    options = {"closed-qa": {"num_options": 4}}
    closed = build_instructions(synth, "train", "closed-qa-mixcut", seed=3, task_options=options, limit=12)
    plain = build_instructions(synth, "train", "closed-qa", seed=3, task_options=options, limit=12)
    for mixed, unmixed in zip(closed, plain, strict=True):
        assert mixed.task == "closed-qa-mixcut" and mixed.question == unmixed.question  # the same question
        assert mixed.answer == unmixed.answer and mixed.extra["options"] == unmixed.extra["options"]
        shown, keys = mixed.extra["options"], mixed.extra["keys"]
        assert mixed.label_b in shown and mixed.label_b != mixed.label
        assert mixed.answer_b == keys[shown.index(mixed.label_b)]
    verify = build_instructions(synth, "train", "closed-negative-qa-mixcut", seed=3, limit=24)
    assert {r.answer_b for r in verify} == {"yes", "no"}
    for record in verify:
        assert record.answer_b == ("yes" if record.extra["candidate"] == record.label_b else "no")
        assert record.answer == ("yes" if record.extra["candidate"] == record.label else "no")


def test_sft_images_mixcut_means_every_task_on_mixed_images() -> None:
    from fgvlm.sft.config import SFTConfig

    cfg = SFTConfig(mix={"open-qa": 1, "closed-qa": 1}, images="mixcut")
    assert cfg.tasks == {"open-qa-mixcut": 1, "closed-qa-mixcut": 1} and cfg.mixed_images
    assert SFTConfig(task="closed-qa-mixcut").eval_task == "closed-qa"
    assert SFTConfig(task="open-qa-mixcut").eval_task == "open-qa" and not SFTConfig().mixed_images
    with pytest.raises(ConfigError, match="images must be one of"):
        SFTConfig(images="blend")
    with pytest.raises(ConfigError, match="plain images"):
        SFTConfig(objective="classify", images="mixcut")


# -- exports ------------------------------------------------------------------------------------------------------
def read_export(path: Path, fmt: str) -> list[dict]:
    text = path.read_text()
    return [json.loads(line) for line in text.splitlines()] if fmt == "messages" else json.loads(text)


@pytest.mark.parametrize("fmt", ["messages", "llava"])
def test_export_schema_and_images(synth, tmp_path, fmt) -> None:
    records = build_instructions(synth, "train", MIX, seed=0, out_dir=tmp_path / "img", limit=20)
    entries = read_export(export_instructions(records, fmt, tmp_path / f"out.{fmt}"), fmt)
    assert len(entries) == 20
    for entry, record in zip(entries, records, strict=True):
        if fmt == "messages":
            assert entry == {
                "id": record.id,
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image_url", "image_url": {"url": record.image}},
                            {"type": "text", "text": record.question},
                        ],
                    },
                    {"role": "assistant", "content": [{"type": "text", "text": record.answer}]},
                ],
                "meta": entry["meta"],
            }
            image = entry["messages"][0]["content"][0]["image_url"]["url"]
        else:
            assert entry == {
                "id": record.id,
                "image": record.image,
                "conversations": [
                    {"from": "human", "value": "<image>\n" + record.question},
                    {"from": "gpt", "value": record.answer},
                ],
                "meta": entry["meta"],
            }
            image = entry["image"]
        assert entry["meta"]["task"] == record.task and entry["meta"]["label"] == record.label
        if record.task == "open-qa-mixcut":
            assert entry["meta"]["answer_b"] == record.answer_b and entry["meta"]["lam"] == record.lam
            assert entry["meta"]["pair"] == list(record.pair)
        assert Path(image).is_absolute()
        with Image.open(image) as img:
            img.load()


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*.png")}


def test_same_seed_gives_byte_identical_exports(synth, tmp_path) -> None:
    runs = []
    for seed in (11, 11, 12):
        records = build_instructions(synth, "train", MIX, seed=seed, out_dir=tmp_path / "img", limit=30)
        images = digest(tmp_path / "img")
        export_instructions(records, "messages", tmp_path / "a.jsonl")
        export_instructions(records, "llava", tmp_path / "a.json")
        runs.append(((tmp_path / "a.jsonl").read_bytes(), (tmp_path / "a.json").read_bytes(), images))
    assert runs[0] == runs[1]
    assert runs[0][0] != runs[2][0] and runs[0][1] != runs[2][1]


def test_instruction_record_meta_skips_unset_fields() -> None:
    record = InstructionRecord("x", "img.png", "q?", "a", "open-qa", 3)
    assert record.meta() == {"task": "open-qa", "label": 3}


# -- the CLI ------------------------------------------------------------------------------------------------------
def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_:
        main(list(argv))
    out, err = capsys.readouterr()
    return exit_.value.code, out, err


def test_cli_on_the_real_mini_set(capsys, tmp_path, flowers_mini) -> None:
    out = tmp_path / "flowers.jsonl"
    args = ["prompts", "build", "--dataset", "flowers102", "--root", str(flowers_mini), "--protocol", "official"]
    args += ["--split", "train", "--limit", "20", "--out", str(out)]
    code, stdout, _ = run_cli(capsys, *args, "--mix", "open-qa=0.5,closed-qa=0.3,closed-negative-qa=0.2")
    assert code == 0 and "wrote 20 conversations (closed-negative-qa 4, closed-qa 6, open-qa 10)" in stdout
    entries = read_export(out, "messages")
    assert [e["id"] for e in entries] == create_dataset(dataset="flowers102", root=flowers_mini).split("train").ids[:20]
    assert all(Path(e["messages"][0]["content"][0]["image_url"]["url"]).is_file() for e in entries)
    llava = tmp_path / "mixcut.json"
    args[-1] = str(llava)
    code, stdout, _ = run_cli(capsys, *args, "--task", "open-qa-mixcut", "--format", "llava", "--mixcut-mode", "cutmix")
    assert code == 0 and "open-qa-mixcut 20" in stdout
    entries = read_export(llava, "llava")
    assert all(e["meta"]["label_b"] != e["meta"]["label"] and len(e["meta"]["box"]) == 4 for e in entries)
    assert all(Path(e["image"]).parent == tmp_path / "mixcut-images" / "mixcut" for e in entries)


def test_cli_on_synthflowers_writes_drawn_images(capsys, tmp_path) -> None:
    out = tmp_path / "synth.json"
    args = ["prompts", "build", "--dataset", "synthflowers", "--limit", "8", "--format", "llava", "--out", str(out)]
    code, stdout, _ = run_cli(capsys, *args, "--task", "closed-qa", "--task-option", "closed-qa.num_options=4")
    assert code == 0 and "closed-qa 8" in stdout
    entries = read_export(out, "llava")
    assert all(Path(e["image"]).parent == tmp_path / "synth-images" / "images" for e in entries)
    assert all(e["conversations"][0]["value"].count("\n") == 6 for e in entries)  # image, header, 4 options, how
    for img in (tmp_path / "synth-images" / "images").iterdir():
        assert Image.open(img).size == (64, 64)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--task", "open-vqa"], "'open-vqa'"),
        (["--mix", "open-qa=lots"], "'open-qa=lots'"),
        (["--mix", "open-qa=1,closed-qa2=1"], "'closed-qa2'"),
        (["--task", "open-qa", "--mix", "open-qa=1"], "not both"),
        (["--task", "open-qa-mixcut", "--alpha", "0"], "alpha"),
    ],
)
def test_cli_bad_input_is_one_clear_line(capsys, tmp_path, extra, message) -> None:
    code, _, err = run_cli(
        capsys, "prompts", "build", "--dataset", "synthflowers", "--out", str(tmp_path / "x.jsonl"), *extra
    )
    assert code == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "x.jsonl").exists()


def test_cli_help_has_examples(capsys) -> None:
    code, out, _ = run_cli(capsys, "prompts", "build", "--help")
    assert code == 0 and "Examples" in out and "--mix" in out and "open-qa-mixcut" in out
