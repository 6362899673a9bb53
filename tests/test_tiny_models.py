"""Tiny models of every family: built offline, loaded back like hub checkpoints, deterministic, cached on demand."""

from __future__ import annotations

import json
import os

import pytest
from models_fixtures import synth_flower_images

from fgvlm.models.base import ModelConfig
from fgvlm.models.families import all_families, family_names
from fgvlm.models.loading import load_backend, load_model
from fgvlm.models.tiny import (
    TinyModelError,
    build_tiny_model,
    cached_model_dir,
    cached_tiny_model,
)
from fgvlm.registry import resource_json
from fgvlm.runs import fingerprint_path

QUESTION = "What type of flower is in this image?"
# The prompt turn (image + question, generation prompt) exactly as each family's template renders it.
RENDERED_PROMPT = {
    "qwen3-vl": f"<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>{QUESTION}<|im_end|>\n"
    "<|im_start|>assistant\n",
    "qwen2.5-vl": "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    f"<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>{QUESTION}<|im_end|>\n<|im_start|>assistant\n",
    "idefics2": f"User:<image>{QUESTION}<end_of_utterance>\nAssistant:",
    "smolvlm": f"<|im_start|>User:<image>{QUESTION}<end_of_utterance>\nAssistant:",
    "instructblip-t5": QUESTION,
    "instructblip": QUESTION,
}
# What the answer "pink primrose" appends to the rendered prompt.
RENDERED_ANSWER = {
    "qwen3-vl": "pink primrose<|im_end|>\n",
    "qwen2.5-vl": "pink primrose<|im_end|>\n",
    "idefics2": " pink primrose<end_of_utterance>\n",
    "smolvlm": " pink primrose<end_of_utterance>\n",
    "instructblip-t5": " pink primrose</s>",
    "instructblip": " pink primrose</s>",
}
PROCESSORS = {
    "qwen3-vl": "Qwen3VLProcessor",
    "qwen2.5-vl": "Qwen2_5_VLProcessor",
    "idefics2": "Idefics2Processor",
    "smolvlm": "SmolVLMProcessor",
    "instructblip-t5": "InstructBlipProcessor",
    "instructblip": "InstructBlipProcessor",
}


def messages(answer: str | None = None) -> list[dict]:
    turns = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}]
    if answer is not None:
        turns.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return turns


@pytest.fixture(scope="module")
def flower_image():
    return synth_flower_images()[0].resize((500, 375))


@pytest.mark.parametrize("family", family_names())
def test_loads_by_registry_name_and_by_path(family, tiny_model_dir, use_tiny_cache):
    path = tiny_model_dir(family)
    by_name = load_model(ModelConfig(name=f"tiny-{family}"))
    by_path = load_model(ModelConfig(name=str(path)))
    for model, processor, info in (by_name, by_path):
        assert type(processor).__name__ == PROCESSORS[family]
        assert not model.training and str(model.device) == "cpu"
        assert info["family"] == family and info["hub_id"] is None and info["dtype"] == "float32"
        assert info["local_path"] == str(path) and info["fingerprint"] == fingerprint_path(path)
        assert 250_000 <= info["num_parameters"] <= 500_000
    assert by_name[2]["name"] == f"tiny-{family}" and by_path[2]["name"] == str(path)
    # Saved as safetensors only, with the marker that says what was built.
    assert (path / "model.safetensors").is_file() and not list(path.glob("*.bin"))
    assert json.loads((path / "fgvlm_tiny.json").read_text())["family"] == family


@pytest.mark.parametrize("family", family_names())
def test_forward_on_a_real_image_through_the_chat_template(family, tiny_model_dir, flower_image):
    import torch

    model, processor, _ = load_model(ModelConfig(name=str(tiny_model_dir(family))))
    prompt = processor.apply_chat_template(messages(), add_generation_prompt=True)
    full = processor.apply_chat_template(messages("pink primrose"))
    assert prompt == RENDERED_PROMPT[family]
    assert full == prompt + RENDERED_ANSWER[family]  # the prompt is a prefix: answer-only loss masks len(prompt)
    inputs = processor(images=[flower_image], text=[prompt], return_tensors="pt")
    ids = inputs["input_ids"]
    image_tokens = int((ids == image_token_id(model.config)).sum())
    if family.startswith("qwen"):
        assert image_tokens == int(inputs["image_grid_thw"].prod()) // 4  # 2x2 patches merge into one token
    elif family == "smolvlm":
        assert image_tokens == 4 * inputs["pixel_values"].shape[1]  # 4 tokens per tile, global view included
    else:
        assert image_tokens == 4  # Idefics2 perceiver latents / InstructBLIP query tokens
    extra = {"decoder_input_ids": torch.zeros((1, 3), dtype=torch.long)} if family == "instructblip-t5" else {}
    with torch.no_grad():
        logits = model(**inputs, **extra).logits
    length = 3 if extra else ids.shape[1]
    assert logits.shape == (1, length, len(processor.tokenizer)) and torch.isfinite(logits).all()


@pytest.mark.parametrize("family", family_names())
def test_the_image_changes_what_the_language_model_sees(family, tiny_model_dir, flower_image):
    """Two real flowers must give clearly different scores and features, or image-handling bugs go unseen.

    Before builder version 2, tiny InstructBLIP ranked every image the same to ~3e-5 (features to ~3e-7) and tiny
    Idefics2 moved scores by ~5e-4; every family now moves them by > 5e-2 (features by > 1e-1).
    """
    other = synth_flower_images()[1]
    backend = load_backend(ModelConfig(name=str(tiny_model_dir(family))))
    names = resource_json("flowers102_classes.json")[:6]
    first, second = (backend.rank([img], QUESTION, names).sum for img in (flower_image, other))
    assert (first - second).abs().max().item() > 1e-2
    features = [backend.embed([img], QUESTION, pooling="mean") for img in (flower_image, other)]
    assert ((features[0] - features[1]).norm() / features[0].norm()).item() > 1e-2


@pytest.mark.parametrize("family", sorted(n for n, r in all_families().items() if r.post_init))
def test_re_initialised_image_path_is_seeded_and_not_degenerate(family, tmp_path):
    import torch
    from safetensors.torch import load_file

    first, second, other = (build_tiny_model(family, tmp_path / str(i), seed=s) for i, s in enumerate((0, 0, 1)))
    weights = [(p / "model.safetensors").read_bytes() for p in (first, second, other)]
    assert weights[0] == weights[1] and weights[0] != weights[2]
    tensors = load_file(first / "model.safetensors")
    key = "model.connector.perceiver_resampler.latents" if family == "idefics2" else "query_tokens"
    rows = tensors[key].reshape(-1, tensors[key].shape[-1])  # the 4 latents / query tokens
    distances = torch.cdist(rows, rows) + torch.eye(len(rows))
    assert len(rows) == 4 and distances.min() > 1e-2  # transformers' own init makes all four equal (ones / zeros)


def image_token_id(config) -> int:
    return config.image_token_index if config.model_type == "instructblip" else config.image_token_id


@pytest.mark.parametrize("family", family_names())
def test_tokenizer_round_trips_class_names_and_any_text(family, tiny_model_dir):
    from transformers import AutoProcessor

    tokenizer = AutoProcessor.from_pretrained(tiny_model_dir(family)).tokenizer
    names = resource_json("flowers102_classes.json")
    lengths = []
    for name in names:
        ids = tokenizer(name, add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(ids) == name
        lengths.append(len(ids))
    assert sum(lengths) / len(lengths) < 5  # merges learnt from the names: not spelled byte by byte
    odd = "Straße 42 — ćvijet ☃ «Bird of Paradise»\ttab"
    assert tokenizer.decode(tokenizer(odd, add_special_tokens=False)["input_ids"]) == odd


def test_special_tokens_are_single_tokens(tiny_model_dir):
    from transformers import AutoProcessor

    expected = {
        "qwen3-vl": ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|image_pad|>", "<|vision_end|>"],
        "idefics2": ["<s>", "</s>", "<fake_token_around_image>", "<image>", "<end_of_utterance>"],
        "smolvlm": ["<|im_start|>", "<image>", "<global-img>", "<end_of_utterance>", "<row_6_col_6>"],
        "instructblip-t5": ["<pad>", "</s>", "<image>"],
    }
    for family, tokens in expected.items():
        tokenizer = AutoProcessor.from_pretrained(tiny_model_dir(family)).tokenizer
        for token in tokens:
            assert tokenizer(token, add_special_tokens=False)["input_ids"] == [tokenizer.convert_tokens_to_ids(token)]
    # Llama-style tokenizers add <s>, the T5 one appends </s>, Qwen adds nothing.
    bos = AutoProcessor.from_pretrained(tiny_model_dir("idefics2")).tokenizer
    t5 = AutoProcessor.from_pretrained(tiny_model_dir("instructblip-t5")).tokenizer
    qwen = AutoProcessor.from_pretrained(tiny_model_dir("qwen3-vl")).tokenizer
    assert bos("rose")["input_ids"][0] == bos.bos_token_id
    assert t5("rose")["input_ids"][-1] == t5.eos_token_id
    assert qwen("rose")["input_ids"] == qwen("rose", add_special_tokens=False)["input_ids"]
    # Generation stops at the end of the assistant turn, as in the real checkpoints' generation configs.
    from transformers import GenerationConfig

    stops = GenerationConfig.from_pretrained(tiny_model_dir("qwen3-vl")).eos_token_id
    assert stops == [qwen.convert_tokens_to_ids("<|im_end|>"), qwen.convert_tokens_to_ids("<|endoftext|>")]


def test_instructblip_has_a_qformer_tokenizer(tiny_model_dir):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_model_dir("instructblip-t5"))
    qformer = processor.qformer_tokenizer
    ids = qformer("Pink Primrose")["input_ids"]
    assert qformer.convert_ids_to_tokens(ids)[0] == "[CLS]" and qformer.decode(ids, skip_special_tokens=True) == (
        "pink primrose"
    )


def test_same_seed_same_bytes_other_seed_other_weights(tmp_path, tiny_model_dir):
    first = build_tiny_model("qwen3-vl", tmp_path / "a", seed=0)
    second = build_tiny_model("qwen3-vl", tmp_path / "b", seed=0)
    other = build_tiny_model("qwen3-vl", tmp_path / "c", seed=1)
    weights = [(p / "model.safetensors").read_bytes() for p in (first, second, other)]
    assert weights[0] == weights[1] and weights[0] != weights[2]
    assert fingerprint_path(first) == fingerprint_path(second) == fingerprint_path(tiny_model_dir("qwen3-vl"))
    assert fingerprint_path(other) != fingerprint_path(first)
    assert (first / "tokenizer.json").read_bytes() == (other / "tokenizer.json").read_bytes()


def test_cache_builds_once_and_keys_on_seed(tmp_path, monkeypatch):
    import fgvlm.models.tiny as tiny

    monkeypatch.setenv("FGVLM_CACHE", str(tmp_path))
    first = cached_tiny_model("tiny-qwen2.5-vl", "qwen2.5-vl")
    assert first.parent == tmp_path / "models" and first.name.startswith("tiny-qwen2.5-vl-")

    def must_not_build(*args, **kwargs):
        raise AssertionError("rebuilt a cached model")

    monkeypatch.setattr(tiny, "build_tiny_model", must_not_build)
    assert cached_tiny_model("tiny-qwen2.5-vl", "qwen2.5-vl") == first
    assert cached_model_dir("tiny-qwen2.5-vl", "qwen2.5-vl", seed=1) != first
    assert [p.name for p in (tmp_path / "models").iterdir()] == [first.name]  # no staging folder left behind


def test_concurrent_builder_that_loses_the_rename_cleans_up(tmp_path, monkeypatch, tiny_model_dir):
    """Another process finishes first (simulated mid-build): this one keeps the winner's folder and drops its own."""
    import shutil

    import fgvlm.models.tiny as tiny

    monkeypatch.setenv("FGVLM_CACHE", str(tmp_path))
    final = cached_model_dir("tiny-qwen3-vl", "qwen3-vl")
    real_build = tiny.build_tiny_model

    def build_while_other_wins(family, out_dir, seed=0, size="tiny"):
        shutil.copytree(tiny_model_dir("qwen3-vl"), final)  # the other process's rename lands first
        return real_build(family, out_dir, seed=seed, size=size)

    monkeypatch.setattr(tiny, "build_tiny_model", build_while_other_wins)
    assert cached_tiny_model("tiny-qwen3-vl", "qwen3-vl") == final
    assert sorted(os.listdir(final.parent)) == [final.name]
    assert fingerprint_path(final) == fingerprint_path(tiny_model_dir("qwen3-vl"))


def test_a_foreign_folder_in_the_cache_is_not_taken_for_a_model(tmp_path, monkeypatch):
    monkeypatch.setenv("FGVLM_CACHE", str(tmp_path))
    final = cached_model_dir("tiny-idefics2", "idefics2")
    final.mkdir(parents=True)
    (final / "notes.txt").write_text("not a model")
    with pytest.raises(TinyModelError, match="exists but is not a complete tiny model; delete it"):
        cached_tiny_model("tiny-idefics2", "idefics2")
    assert sorted(os.listdir(final.parent)) == [final.name]


def test_unknown_family_and_size_are_refused(tmp_path):
    with pytest.raises(TinyModelError, match="no tiny model for family 'llava'.*qwen3-vl"):
        build_tiny_model("llava", tmp_path)
    with pytest.raises(TinyModelError, match="only for qwen3-vl"):
        build_tiny_model("idefics2", tmp_path, size="small")
    with pytest.raises(TinyModelError, match="unknown tiny model size 'huge'"):
        build_tiny_model("qwen3-vl", tmp_path, size="huge")


def test_cli_builds_a_model_that_info_reads_back(tmp_path, capsys):
    from typer.testing import CliRunner

    from fgvlm.commands.models import app

    runner = CliRunner()
    out = tmp_path / "cli-model"
    built = runner.invoke(app, ["tiny", "--family", "idefics2", "--out", str(out), "--seed", "3", "--json"])
    assert built.exit_code == 0, built.output
    summary = json.loads(built.stdout)
    assert summary["family"] == "idefics2" and summary["seed"] == 3 and summary["path"] == str(out)
    shown = runner.invoke(app, ["info", str(out), "--json"])
    assert shown.exit_code == 0, shown.output
    info = json.loads(shown.stdout.strip().splitlines()[-1])
    assert info["family"] == "idefics2" and info["fingerprint"] == summary["fingerprint"]
    assert info["num_parameters"] == summary["num_parameters"]
    refused = runner.invoke(app, ["tiny", "--family", "llava", "--out", str(tmp_path / "x")])
    assert refused.exit_code != 0 and "no tiny model for family 'llava'" in str(refused.exception)


def test_small_qwen3_vl_has_benchmark_size(tmp_path, monkeypatch, flower_image):
    from transformers import AutoProcessor

    from fgvlm.models.loading import resolve_source

    monkeypatch.setenv("FGVLM_CACHE", str(tmp_path))
    path = resolve_source("small-qwen3-vl").local_path
    assert path.parent == tmp_path / "models" and path.name.startswith("small-qwen3-vl-")
    marker = json.loads((path / "fgvlm_tiny.json").read_text())
    assert marker["size"] == "small" and 20e6 <= marker["num_parameters"] <= 35e6
    processor = AutoProcessor.from_pretrained(path)
    prompt = processor.apply_chat_template(messages(), add_generation_prompt=True)
    ids = processor(images=[flower_image], text=[prompt], return_tensors="pt")["input_ids"]
    assert 50 <= ids.shape[1] <= 80  # a 224-px image -> 48 tokens, plus the template


def test_models_tiny_refuses_a_non_empty_out(tmp_path, capsys):
    from fgvlm.cli import main

    (tmp_path / "config.json").write_text("{}")  # e.g. a real checkpoint's folder
    with pytest.raises(SystemExit) as code:
        main(["models", "tiny", "--family", "qwen3-vl", "--out", str(tmp_path)])
    assert code.value.code == 2 and "is not empty" in capsys.readouterr().err
    assert (tmp_path / "config.json").read_text() == "{}"
