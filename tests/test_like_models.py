"""Tiny models shaped like real checkpoints (``tiny-like-qwen3-vl-4b``, ``tiny-like-qwen2.5-vl-3b``).

Built from the real hub files in ``../shared/data/hub-configs`` (config, tokenizer, processor, chat template): the
backend must render exactly the real template's text, count image tokens as the real processor does, score every
Flowers102 class name as its own tokens plus the end-of-turn token, rank cached == brute force, return answers
without special tokens, and strip Qwen3's ``<think>`` block, which the real tokenizer does not mark as special.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from models_fixtures import synth_flower_images

torch = pytest.importorskip("torch")

from fgvlm.models.base import ModelConfig  # noqa: E402
from fgvlm.models.chat import strip_reasoning  # noqa: E402
from fgvlm.models.tiny.like import hub_configs_root  # noqa: E402
from fgvlm.registry import resource_json  # noqa: E402

QUESTION = "What type of flower is in this image?"
LIKE = {  # registry name -> (hub-config folder, image size giving 10 x 8 merged patches = 80 image tokens)
    "tiny-like-qwen3-vl-4b": ("Qwen__Qwen3-VL-4B-Instruct", (320, 256)),  # patch 16 x merge 2 = 32 px per token
    "tiny-like-qwen2.5-vl-3b": ("Qwen__Qwen2.5-VL-3B-Instruct", (280, 224)),  # patch 14 x merge 2 = 28 px
}
QWEN3 = "tiny-like-qwen3-vl-4b"


def hub_folder(name: str) -> Path:
    folder = hub_configs_root() / name
    if not (folder / "config.json").is_file():
        message = f"real hub config files not found at {folder} (../shared/data/hub-configs beside the repo)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return folder


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def load_like(name: str, tmp_path_factory: pytest.TempPathFactory):
    """The backend of registry model ``name``, built once per session into a session cache."""
    from fgvlm.models.loading import load_backend

    hub_folder(LIKE[name][0])
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FGVLM_CACHE", str(tmp_path_factory.getbasetemp() / "like-cache"))
        return load_backend(ModelConfig(name=name))


@pytest.fixture(scope="module", params=list(LIKE))
def like(request, tmp_path_factory):
    """``(registry name, backend)`` of each like-model, loaded by registry name."""
    return request.param, load_like(request.param, tmp_path_factory)


def real_template_text(folder: Path, messages: list[dict]) -> str:
    """The real ``chat_template.json`` rendered with jinja2 as transformers does (trim/lstrip blocks)."""
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    template = json.loads((folder / "chat_template.json").read_text())["chat_template"]
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    return env.from_string(template).render(messages=messages, add_generation_prompt=True)


def test_shrunk_but_same_vocabulary_ids_and_vision_geometry(like):
    from transformers import AutoConfig

    name, backend = like
    real = AutoConfig.from_pretrained(hub_folder(LIKE[name][0]))
    tiny = backend.model.config
    for key in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id"):
        assert getattr(tiny, key) == getattr(real, key), key
    assert tiny.text_config.vocab_size == real.text_config.vocab_size == 151936
    for key in ("patch_size", "spatial_merge_size", "temporal_patch_size"):
        assert getattr(tiny.vision_config, key) == getattr(real.vision_config, key), key
    assert tiny.text_config.num_hidden_layers < real.text_config.num_hidden_layers
    assert tiny.text_config.hidden_size < real.text_config.hidden_size
    marker = json.loads((Path(backend.info["local_path"]) / "fgvlm_tiny.json").read_text())
    assert marker["like"] == LIKE[name][0] and 3e6 < marker["num_parameters"] < 8e6
    for copied in ("chat_template.json", "tokenizer_config.json", "vocab.json", "generation_config.json"):
        assert (Path(backend.info["local_path"]) / copied).read_bytes() == (
            hub_folder(LIKE[name][0]) / copied
        ).read_bytes()


def test_rendered_prompt_is_the_real_templates_text(like):
    from fgvlm.models.chat import build_messages

    name, backend = like
    folder = hub_folder(LIKE[name][0])
    for with_image in (True, False):
        expected = real_template_text(folder, build_messages(QUESTION, with_image=with_image))
        assert backend.render_prompt(QUESTION, with_image=with_image) == expected
    assert backend.render_prompt(QUESTION).endswith(
        f"<|vision_start|><|image_pad|><|vision_end|>{QUESTION}<|im_end|>\n<|im_start|>assistant\n"
    )


def test_image_token_count_follows_the_real_processor(like):
    name, backend = like
    image = synth_flower_images(1)[0].resize(LIKE[name][1])
    inputs = backend.encode([image], [backend.render_prompt(QUESTION)])
    image_tokens = int((inputs["input_ids"] == backend.model.config.image_token_id).sum())
    assert image_tokens == 80 == int(inputs["image_grid_thw"].prod()) // 4


def test_every_class_name_is_scored_as_its_tokens_plus_end_of_turn(like):
    _, backend = like
    names = resource_json("flowers102_classes.json")
    assert len(names) == 102
    im_end = backend.tokenizer.convert_tokens_to_ids("<|im_end|>")
    _, suffixes, ids = backend._render_candidates(QUESTION, tuple(names), with_image=True)
    for name, suffix, answer_ids in zip(names, suffixes, ids, strict=True):
        assert suffix == f"{name}<|im_end|>"
        assert answer_ids == backend.tokenizer(name, add_special_tokens=False)["input_ids"] + [im_end], name


def test_cached_rank_of_all_names_equals_brute_force(like):
    name, backend = like
    image = synth_flower_images(1)[0].resize(LIKE[name][1])
    names = resource_json("flowers102_classes.json")
    cached = backend.rank([image], QUESTION, names)
    some = names[::17]  # 6 names of 1-4 tokens: one full forward each
    brute = backend.rank([image], QUESTION, some, reuse_prefix=False)
    torch.testing.assert_close(cached.sum[:, ::17], brute.sum, atol=1e-4, rtol=0)
    assert cached.num_tokens[::17] == brute.num_tokens and torch.isfinite(cached.sum).all()


def test_generated_text_carries_no_special_tokens(like):
    name, backend = like
    images = [image.resize(LIKE[name][1]) for image in synth_flower_images(2)]
    answers = backend.generate(images, [QUESTION, "Name it."], max_new_tokens=6)
    specials = backend.tokenizer.all_special_tokens
    assert len(answers) == 2 and not [a for a in answers if any(token in a for token in specials)]
    tokens = backend.tokenizer("<|vision_start|>pink primrose<|im_end|><|endoftext|>", add_special_tokens=False)
    assert backend.decode(torch.tensor([tokens["input_ids"]])) == ["pink primrose"]


def test_reasoning_block_of_the_real_qwen3_tokenizer_is_stripped(tmp_path_factory):
    """``<think>``/``</think>`` are added, not special: decoding keeps them; the answer drops them, raw keeps them."""
    backend = load_like(QWEN3, tmp_path_factory)
    tokenizer = backend.tokenizer
    ids = tokenizer("<think>\n\n</think>\n\npink primrose<|im_end|>", add_special_tokens=False)["input_ids"]
    assert ids[:1] == [151667] and 151668 in ids  # single added tokens, as in the real tokenizer
    decoded = tokenizer.decode(ids, skip_special_tokens=True)
    assert decoded.startswith("<think>")  # what skip_special_tokens leaves
    assert strip_reasoning(decoded) == "pink primrose"
    assert backend.decode(torch.tensor([ids]), return_raw=True) == [("pink primrose", decoded.strip())]
    thought = tokenizer("<think>\nA pink flower.\n</think>\n\npink primrose", add_special_tokens=False)["input_ids"]
    assert backend.decode(torch.tensor([thought])) == ["pink primrose"]
    assert strip_reasoning("pink primrose <think>x</think>") == "pink primrose <think>x</think>"  # only leading


def test_cli_builds_a_like_model_from_a_folder(tmp_path):
    from typer.testing import CliRunner

    from fgvlm.commands.models import app

    source = hub_folder(LIKE["tiny-like-qwen2.5-vl-3b"][0])
    runner = CliRunner()
    built = runner.invoke(app, ["tiny", "--like", str(source), "--out", str(tmp_path / "m"), "--json"])
    assert built.exit_code == 0, built.output
    summary = json.loads(built.stdout.strip().splitlines()[-1])
    assert summary["family"] == "qwen2.5-vl" and summary["like"] == source.name and summary["size"] == "like"
    assert (tmp_path / "m" / "model.safetensors").is_file() and (tmp_path / "m" / "merges.txt").is_file()
    both = runner.invoke(app, ["tiny", "--like", str(source), "--family", "qwen3-vl", "--out", str(tmp_path / "x")])
    assert both.exit_code != 0 and "exactly one of --family" in str(both.exception)
    missing = runner.invoke(app, ["tiny", "--like", str(tmp_path / "nothing"), "--out", str(tmp_path / "y")])
    assert missing.exit_code != 0 and "no hub config folder at" in str(missing.exception)
