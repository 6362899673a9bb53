"""Family records on the tiny model of every family: module prefixes, LoRA targets, PEFT-safe ranking, ownership.

What is pinned: the vision / projector / language prefixes partition every parameter; the LoRA pattern adapts
language-model linears only (every layer's attention and MLP); ``rank`` on a LoRA-wrapped model equals the
brute-force reference (zero-initialised adapters, and after an optimiser step); a backend leaves its model's
train mode and its tokenizer's padding side as it found them; a family added as one file + one entry loads and ranks.
"""

from __future__ import annotations

import re
import sys

import pytest
from models_fixtures import synth_flower_images

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")

from fgvlm.models.base import ModelConfig  # noqa: E402
from fgvlm.models.families import FamilyRecord, all_families, family_for_config, family_names, get_family  # noqa: E402

QUESTION = "What is the name of the flower in this image?"
NAMES = ["rose", "lotus", "pink primrose", "bird of paradise", "hard-leaved pocket orchid"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def load(tiny_model_dir, family: str):
    from transformers import AutoModelForImageTextToText

    return AutoModelForImageTextToText.from_pretrained(tiny_model_dir(family))


def test_records_are_complete_and_found_by_name_and_config():
    assert family_names() == ["qwen3-vl", "qwen2.5-vl", "idefics2", "smolvlm", "instructblip", "instructblip-t5"]
    for name, record in all_families().items():
        assert get_family(name) is record and record.name == name
        assert record.lora_target_modules and record.vision_modules and record.language_modules
        assert record.projector_modules and record.template and record.tiny_recipe
    t5 = {"model_type": "instructblip", "text_config": {"model_type": "t5", "is_encoder_decoder": True}}
    assert family_for_config(t5).name == "instructblip-t5"
    assert family_for_config({"model_type": "idefics3"}).name == "smolvlm"


@pytest.mark.parametrize("family", family_names())
def test_module_prefixes_partition_the_parameters(family, tiny_model_dir):
    record = get_family(family)
    model = load(tiny_model_dir, family)
    parts: dict[str | None, int] = {}
    for name, parameter in model.named_parameters():
        part = record.part_of(name)
        assert part is not None, f"{family}: parameter {name} is in no part"
        matching = [
            prefix
            for prefix in record.vision_modules + record.projector_modules + record.language_modules
            if name == prefix or name.startswith(prefix + ".")
        ]
        assert len(matching) == 1, f"{family}: {name} matches {matching}"
        parts[part] = parts.get(part, 0) + parameter.numel()
    assert set(parts) == {"vision", "projector", "language"}, parts


@pytest.mark.parametrize("family", family_names())
def test_lora_targets_adapt_the_language_model_only(family, tiny_model_dir):
    record = get_family(family)
    model = load(tiny_model_dir, family)
    wrapped = peft.get_peft_model(model, peft.LoraConfig(r=2, target_modules=record.lora_target_modules))
    adapted = [name for name, module in wrapped.get_base_model().named_modules() if hasattr(module, "lora_A")]
    assert adapted
    for name in adapted:
        assert record.part_of(name + ".weight") == "language", f"{family}: adapter on {name}"
    # every layer of the language model gets adapters on its attention and MLP projections
    layers = {re.search(r"\.(layers|block)\.(\d+)\.", name).group(2) for name in adapted}
    config = model.config.get_text_config()
    assert len(layers) == (getattr(config, "num_hidden_layers", None) or config.num_layers)
    kinds = {name.rsplit(".", 1)[-1] for name in adapted}
    assert len(kinds) >= 6, kinds  # q, k, v, o + MLP (gate/up/down or wi_0/wi_1/wo)


def one_optimizer_step(model) -> None:
    """One SGD step on a random linear loss of the adapters: B leaves zero, every adapter weight moves."""
    generator = torch.Generator().manual_seed(0)
    trainable = [p for p in model.parameters() if p.requires_grad]
    loss = sum((p * torch.randn(p.shape, generator=generator)).sum() for p in trainable)
    optimizer = torch.optim.SGD(trainable, lr=0.05)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()


@pytest.mark.parametrize("family", family_names())
def test_rank_on_a_lora_wrapped_model_equals_brute_force(family, tiny_model_dir):
    """Prefix-cached ranking reads inner modules through get_base_model(): PEFT's wrapper must not shift them."""
    from transformers import AutoProcessor

    from fgvlm.models.families import backend_class

    record = get_family(family)
    model = load(tiny_model_dir, family)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # LoRA's A matrices: the same draw whatever ran before
        wrapped = peft.get_peft_model(model, peft.LoraConfig(r=2, target_modules=record.lora_target_modules))
    processor = AutoProcessor.from_pretrained(tiny_model_dir(family))
    backend = backend_class(family)(wrapped, processor, {"family": family})
    images = synth_flower_images(2)
    scores = {}
    for step in ("zero-init B", "after one optimizer step"):
        if step != "zero-init B":
            one_optimizer_step(wrapped)
        wrapped.train()  # as a trainer holds it: the backend switches to eval for the request and back
        cached = backend.rank(images, QUESTION, NAMES)
        brute = backend.rank(images, QUESTION, NAMES, reuse_prefix=False)
        assert wrapped.training, f"{family}: rank left the model in eval mode"
        scores[step] = cached.sum
        for kind in ("sum", "prior"):
            # 1e-4, widened by 1e-6 relative: tiny random InstructBLIP-T5 sums ~330 nats, where float32 steps 3e-5
            # (the PEFT path bug this guards against moved scores by ~5e-2)
            torch.testing.assert_close(cached.get(kind), brute.get(kind), atol=1e-4, rtol=1e-6, msg=f"{family} {step}")
    assert (scores["zero-init B"] - scores["after one optimizer step"]).abs().max() > 1e-3  # the step did change it
    unwrapped = backend_class(family)(model, processor, {"family": family})  # same weights, adapters inside
    torch.testing.assert_close(unwrapped.rank(images, QUESTION, NAMES).sum, cached.sum, atol=1e-4, rtol=0)


def test_backend_leaves_model_mode_and_padding_side_alone(tiny_model_dir):
    from transformers import AutoProcessor

    from fgvlm.models.families import backend_class

    model = load(tiny_model_dir, "qwen3-vl").train()
    processor = AutoProcessor.from_pretrained(tiny_model_dir("qwen3-vl"))
    processor.tokenizer.padding_side = "right"  # as a training collator may want it
    backend = backend_class("qwen3-vl")(model, processor, {"family": "qwen3-vl"})
    assert model.training
    images = synth_flower_images(2)
    answers = backend.generate(images, [QUESTION, "Name it."], max_new_tokens=3)
    backend.embed(images, QUESTION)
    assert len(answers) == 2 and model.training and processor.tokenizer.padding_side == "right"
    encoded = backend.encode(images, [backend.render_prompt(QUESTION), backend.render_prompt("Name it.")])
    assert encoded["attention_mask"][:, 0].tolist().count(0) == 1  # still left-padded for the backend itself


THROWAWAY_FAMILY = '''
"""A throwaway family for the test: Qwen3-VL's architecture under another name (one file)."""

import dataclasses

from fgvlm.models.families.qwen3_vl import FAMILY as QWEN3_VL, Qwen3VLBackend


class CloneBackend(Qwen3VLBackend):
    family = "qwen3-vl-clone"


FAMILY = dataclasses.replace(
    QWEN3_VL,
    name="qwen3-vl-clone",
    model_types=(),  # reached only by name: model.family or a preset
    backend="fgvlm_clone_family:CloneBackend",
    tiny_sizes=("tiny",),
)
'''


def test_a_family_added_as_one_file_and_one_entry_loads_and_ranks(tmp_path, monkeypatch):
    import fgvlm.models.families as families
    from fgvlm.models.loading import load_backend
    from fgvlm.models.tiny import build_tiny_model

    (tmp_path / "fgvlm_clone_family.py").write_text(THROWAWAY_FAMILY)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(families, "FAMILY_RECORDS", (*families.FAMILY_RECORDS, "fgvlm_clone_family:FAMILY"))
    try:
        assert "qwen3-vl-clone" in family_names()
        folder = build_tiny_model("qwen3-vl-clone", tmp_path / "model")
        backend = load_backend(ModelConfig(name=str(folder), family="qwen3-vl-clone"))
        assert type(backend).__name__ == "CloneBackend" and backend.describe()["family"] == "qwen3-vl-clone"
        scores = backend.rank(synth_flower_images(1), QUESTION, NAMES)
        assert scores.sum.shape == (1, len(NAMES)) and torch.isfinite(scores.sum).all()
        assert isinstance(get_family("qwen3-vl-clone"), FamilyRecord)
    finally:
        sys.modules.pop("fgvlm_clone_family", None)
    monkeypatch.undo()
    assert "qwen3-vl-clone" not in family_names()
