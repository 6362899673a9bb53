"""Prompt tasks: every shipped task renders, option keys, distractors, verification balance, family wording."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fgvlm.prompts import (
    build_prompt,
    check_options,
    confusable_classes,
    get_task,
    item_seed,
    object_word,
    option_keys,
    task_names,
)
from fgvlm.registry import UnknownNameError, prompt_tasks, resource_json

NAMES = resource_json("flowers102_classes.json")
L = {name: label for label, name in enumerate(NAMES)}
FAMILIES = ("qwen3-vl", "qwen2.5-vl", "idefics2", "smolvlm", "instructblip", "instructblip-t5", None)


@pytest.mark.parametrize("task", task_names())
@pytest.mark.parametrize("family", FAMILIES)
def test_every_shipped_task_renders_for_every_family(task: str, family: str | None) -> None:
    prompt = build_prompt(task, NAMES, label=L["rose"], family=family, seed=3, object="flower")
    assert prompt.text and "{" not in prompt.text and "flower" in prompt.text
    assert prompt.answer
    json.dumps(prompt.to_dict())
    if family and family.startswith("instructblip"):
        assert prompt.text.startswith("Question: ") and prompt.text.endswith("Answer:")
        assert prompt.family == family
    else:
        assert prompt.family is None


def test_task_table_shape() -> None:
    assert set(task_names()) == {"open-qa", "closed-qa", "closed-negative-qa"}
    assert {get_task(t)["kind"] for t in task_names()} == {"open", "closed", "verify"}
    assert object_word("flowers102") == "flower" and object_word("imagefolder") == "object"
    assert object_word("cub200") == "bird species" and object_word("oxford-pets") == "pet breed"
    assert all(not k.startswith("_") for k in task_names()) and "_objects" not in prompt_tasks()


def test_open_qa_wording() -> None:
    prompt = build_prompt("open-qa", NAMES, label=L["lotus lotus"], object="flower")
    assert prompt.text == "What is the name of the flower in this image? Answer with the name only."
    assert prompt.answer == "lotus lotus" and prompt.label == L["lotus lotus"]
    assert build_prompt("open-qa", NAMES, family="instructblip").text == (
        "Question: What is the name of the object in this image? Answer:"
    )


def test_option_keys() -> None:
    assert option_keys(3) == ["A", "B", "C"]
    keys = option_keys(703)
    assert keys[25:28] == ["Z", "AA", "AB"] and keys[51:53] == ["AZ", "BA"] and keys[701:] == ["ZZ", "AAA"]
    assert option_keys(102)[-1] == "CX" and len(set(option_keys(702))) == 702
    assert option_keys(3, "numbers") == ["1", "2", "3"]


def test_closed_qa_all_classes() -> None:
    prompt = build_prompt("closed-qa", NAMES, label=L["rose"], seed=7, object="flower")
    assert sorted(prompt.options) == list(range(102)) and len(prompt.keys) == 102
    assert prompt.key_to_label[prompt.answer] == L["rose"]
    line = f"\n{prompt.answer}. rose\n"
    assert line in prompt.text and prompt.text.endswith("Answer with the letter of the correct option only.")
    assert build_prompt("closed-qa", NAMES, label=L["rose"], seed=7).options == prompt.options  # seeded
    assert build_prompt("closed-qa", NAMES, label=L["rose"], seed=8).options != prompt.options
    ordered = build_prompt("closed-qa", NAMES, label=L["rose"], shuffle=False)
    # rose is class 73, so key 74: after A..Z and AA..AZ (52 keys), the 22nd of BA..BZ
    assert list(ordered.options) == list(range(102)) and ordered.answer == "BV"
    assert "\nA. pink primrose\nB. hard-leaved pocket orchid\n" in ordered.text


def test_closed_qa_hard_and_random_distractors() -> None:
    hard = build_prompt("closed-qa", NAMES, label=L["rose"], num_options=3, distractors="hard", seed=1)
    assert {NAMES[c] for c in hard.options} == {"rose", "lenten rose", "desert-rose"}
    for seed in range(20):
        rand = build_prompt("closed-qa", NAMES, label=L["rose"], num_options=5, seed=seed)
        assert len(set(rand.options)) == 5 and L["rose"] in rand.options and rand.keys == ("A", "B", "C", "D", "E")
    by_name = build_prompt("closed-qa", NAMES, label=L["rose"], num_options=4, answer_by="name", option_keys="numbers")
    assert by_name.answer == "rose" and by_name.keys == ("1", "2", "3", "4")
    assert by_name.text.endswith("Answer with the name of the correct option only.")
    numbered = build_prompt("closed-qa", NAMES, label=L["rose"], num_options=4, option_keys="numbers")
    assert numbered.text.endswith("Answer with the number of the correct option only.")


def test_similarity_matrix_drives_hard_choices() -> None:
    names = ["a", "b", "c", "d"]
    similarity = np.array([[0, 0.1, 0.9, 0.5], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    assert confusable_classes(0, names, similarity) == [2, 3, 1]
    prompt = build_prompt("closed-qa", names, label=0, num_options=2, distractors="hard", similarity=similarity)
    assert set(prompt.options) == {0, 2}
    negative = build_prompt("closed-negative-qa", names, label=0, candidate=3)
    assert negative.text == "Is this object a d? Answer yes or no." and negative.answer == "no"
    with pytest.raises(ValueError, match="shape"):
        confusable_classes(0, names, np.zeros((3, 3)))


def test_name_similarity_groups_shared_words() -> None:
    lilies = [NAMES[c] for c in confusable_classes(L["tiger lily"], NAMES)[:8]]
    assert all(name.endswith("lily") for name in lilies)
    assert {NAMES[c] for c in confusable_classes(L["corn poppy"], NAMES)[:2]} == {"californian poppy", "tree poppy"}


def test_closed_negative_qa_balance_and_hard_negatives() -> None:
    hard_pool = set(confusable_classes(L["rose"], NAMES)[:3])
    prompts = [build_prompt("closed-negative-qa", NAMES, label=L["rose"], seed=s, object="flower") for s in range(400)]
    positives = [p for p in prompts if p.is_positive]
    assert 0.42 < len(positives) / len(prompts) < 0.58
    assert all(p.candidate == L["rose"] and p.answer == "yes" for p in positives)
    negatives = [p for p in prompts if not p.is_positive]
    assert all(p.candidate in hard_pool and p.answer == "no" for p in negatives)
    assert {p.candidate for p in negatives} == hard_pool
    assert positives[0].text == "Is this flower a rose? Answer yes or no."
    forced = build_prompt(
        "closed-negative-qa", NAMES, label=L["rose"], candidate=L["english marigold"], object="flower"
    )
    assert forced.text == "Is this flower an english marigold? Answer yes or no." and forced.is_positive is False


def test_errors_name_the_problem() -> None:
    with pytest.raises(UnknownNameError, match="closed-qa"):
        build_prompt("closed-q", NAMES)
    with pytest.raises(ValueError, match="num_option"):
        check_options("open-qa", {"num_option": 3})
    with pytest.raises(ValueError, match="num_options must be between 2 and 102"):
        build_prompt("closed-qa", NAMES, label=1, num_options=103)
    with pytest.raises(ValueError, match="needs the true label"):
        build_prompt("closed-qa", NAMES, num_options=4)
    with pytest.raises(ValueError, match="needs the true label"):
        build_prompt("closed-negative-qa", NAMES)
    with pytest.raises(ValueError, match="outside"):
        build_prompt("open-qa", NAMES, label=102)


def test_item_seed_is_stable_and_distinct() -> None:
    assert item_seed(0, "00001") == item_seed(0, "00001")
    assert len({item_seed(0, f"{i:05d}") for i in range(1000)} | {item_seed(1, "00001")}) == 1001
