"""Padding-free packing is exact: per-sample losses of one packed row equal each sample's own forward.

Tiny Qwen3-VL and Qwen2.5-VL, real synthflowers images of three different sizes, three samples of different prompt
and answer lengths. The model runs in float64 so the 1e-5 bound tests the method, not float32 rounding (float32
agrees to ~2e-6 on these sums of 20-110 nats). The control shows the same check fails when ``use_cache=False`` is
dropped: the cache switches packed-sequence detection off and the samples attend to each other.
"""

from __future__ import annotations

import json

import pytest
import torch

from fgvlm.sft.packing import (
    PackingError,
    pack_samples,
    packed_forward,
    per_sample_nll,
    sample_starts,
    supports_packing,
)

QA = [
    ("What is the name of the flower in this image?", "amberlit pennaspine"),
    ("Name it.", "plumdusk"),
    ("Which of the flower species is shown here? Answer with the name only.", "goldfrost octalume flower"),
]


@pytest.fixture(scope="module")
def synth_images() -> list:
    from fgvlm.data import create_dataset

    train = create_dataset(dataset="synthflowers").split("train")
    return [train[i].image.resize(size) for i, size in enumerate([(64, 64), (96, 64), (64, 128)])]


def load(tiny_model_dir, family: str):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    path = tiny_model_dir(family)
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float64)
    return model.train(), AutoProcessor.from_pretrained(path)


def encode(processor, image, question: str, answer: str) -> dict:
    """One unpadded sample, labels -100 on the prompt (as the SFT collator encodes it)."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    prompt_len = processor(images=[image], text=[prompt], return_tensors="pt")["input_ids"].shape[1]
    sample = dict(processor(images=[image], text=[prompt + answer + "<|im_end|>\n"], return_tensors="pt"))
    sample["labels"] = sample["input_ids"].clone()
    sample["labels"][:, :prompt_len] = -100
    sample["pixel_values"] = sample["pixel_values"].double()
    return sample


def unpacked_nll(model, sample: dict) -> torch.Tensor:
    logits = model(**sample, use_cache=False).logits
    return torch.nn.functional.cross_entropy(logits[0, :-1], sample["labels"][0, 1:], reduction="sum")


@pytest.mark.parametrize("family", ["qwen3-vl", "qwen2.5-vl"])
def test_packed_losses_equal_unpacked(tiny_model_dir, synth_images, family: str) -> None:
    model, processor = load(tiny_model_dir, family)
    samples = [encode(processor, image, q, a) for image, (q, a) in zip(synth_images, QA, strict=True)]
    lengths = [s["input_ids"].shape[1] for s in samples]
    assert len(set(lengths)) == 3
    batch = pack_samples(samples, model)
    total = sum(lengths)
    assert batch["input_ids"].shape == batch["labels"].shape == (1, total)
    assert batch["position_ids"].shape == (4, 1, total)
    assert batch["attention_mask"] is None and "use_cache" not in batch
    assert batch["pixel_values"].shape[0] == sum(s["pixel_values"].shape[0] for s in samples)
    assert sample_starts(batch["position_ids"]) == [0, lengths[0], lengths[0] + lengths[1]]
    with torch.no_grad():
        reference = torch.stack([unpacked_nll(model, s) for s in samples])
        packed = per_sample_nll(packed_forward(model, batch).logits, batch["labels"], batch["position_ids"])
        leaky = per_sample_nll(model(**batch).logits, batch["labels"], batch["position_ids"])  # config: use_cache=True
    assert torch.allclose(packed, reference, rtol=0, atol=1e-5), (packed, reference)
    assert (leaky - reference).abs().max() > 1e-3  # the check above can fail: without use_cache=False it does


def test_peft_wrapped_model_packs_the_same(tiny_model_dir, synth_images) -> None:
    from peft import LoraConfig, get_peft_model

    model, processor = load(tiny_model_dir, "qwen3-vl")
    samples = [encode(processor, image, q, a) for image, (q, a) in zip(synth_images, QA, strict=True)]
    plain = pack_samples(samples, model)
    wrapped = get_peft_model(model, LoraConfig(r=2, target_modules=r".*language_model.*\.(q|v)_proj$"))
    packed = pack_samples(samples, wrapped)
    assert torch.equal(packed["position_ids"], plain["position_ids"])


def test_refuses_what_packing_would_get_wrong(tiny_model_dir, synth_images) -> None:
    model, processor = load(tiny_model_dir, "qwen3-vl")
    sample = encode(processor, synth_images[0], *QA[0])
    padded = dict(sample, attention_mask=torch.cat([sample["attention_mask"], torch.zeros(1, 1, dtype=torch.long)], 1))
    padded["input_ids"] = torch.cat([sample["input_ids"], torch.zeros(1, 1, dtype=torch.long)], 1)
    padded["labels"] = torch.cat([sample["labels"], torch.full((1, 1), -100)], 1)
    padded["mm_token_type_ids"] = torch.cat([sample["mm_token_type_ids"], torch.zeros(1, 1, dtype=torch.long)], 1)
    with pytest.raises(PackingError, match="sample 1 is padded"):
        pack_samples([sample, padded], model)
    batch = pack_samples([sample], model)
    with pytest.raises(PackingError, match="use_cache=False"):
        packed_forward(model, batch, use_cache=True)
    with pytest.raises(PackingError, match="attention_mask=None"):
        packed_forward(model, dict(batch, attention_mask=torch.ones_like(batch["input_ids"])))
    assert supports_packing("qwen3-vl") and supports_packing("qwen2.5-vl") and not supports_packing("idefics2")


def test_refuses_other_families(tiny_model_dir) -> None:
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir("smolvlm"))
    with pytest.raises(PackingError, match="not model type 'smolvlm'"):
        pack_samples([{"input_ids": torch.ones(3, dtype=torch.long), "labels": torch.ones(3, dtype=torch.long)}], model)


def test_loss_weights_become_token_weights(tiny_model_dir, synth_images) -> None:
    model, processor = load(tiny_model_dir, "qwen3-vl")
    samples = [encode(processor, image, q, a) for image, (q, a) in zip(synth_images, QA, strict=True)]
    for sample, weight in zip(samples, [1.0, 0.25, 0.75], strict=True):
        sample["loss_weight"] = weight
    batch = pack_samples(samples, model)
    lengths = [s["input_ids"].shape[1] for s in samples]
    expected = torch.cat([torch.full((n,), w) for n, w in zip(lengths, [1.0, 0.25, 0.75], strict=True)])
    assert torch.equal(batch["token_weights"], expected[None])
    with torch.no_grad():
        assert packed_forward(model, batch).logits.shape[1] == sum(lengths)  # token_weights never reach the model


def test_mm_token_types_derived_when_missing(tiny_model_dir, synth_images) -> None:
    model, processor = load(tiny_model_dir, "qwen2.5-vl")
    samples = [encode(processor, image, q, a) for image, (q, a) in zip(synth_images, QA, strict=True)]
    with_types = pack_samples(samples, model)
    without = pack_samples([{k: v for k, v in s.items() if k != "mm_token_type_ids"} for s in samples], model)
    assert torch.equal(with_types["position_ids"], without["position_ids"])
    assert "mm_token_type_ids" not in without


def test_fgvlm_sft_with_packing_trains_the_padded_curve(use_tiny_cache, tmp_path, monkeypatch) -> None:
    """``packing: true`` end to end (Trainer, collator, answer-only loss): the same per-step losses as padding,
    with 4 samples of different lengths per step."""
    import fgvlm.sft.packing
    from fgvlm.config import from_dict
    from fgvlm.sft.config import SFTConfig
    from fgvlm.sft.run import run_sft

    def train_losses(packing: bool) -> list[float]:
        cfg = from_dict(
            SFTConfig,
            {
                "model": {"name": "tiny-qwen3-vl"},
                "data": {"dataset": "synthflowers", "options": {"num_classes": 4, "images_per_class": [4, 1, 1]}},
                "task": "closed-qa",  # answers and prompts of several lengths
                "packing": packing,
                "train": {
                    "max_steps": 3,
                    "lr": 2e-3,
                    "per_device_batch_size": 4,
                    "log_every": 1,
                    "warmup_ratio": 0.0,
                    "eval_every": 100,
                    "eval_limit": 1,
                },  # fmt: skip
                "eval_limit": 1,
                "report_to": "none",
            },
        )
        out = tmp_path / f"packing-{packing}"
        run_sft(cfg, out)
        return [json.loads(line)["train_loss"] for line in (out / "train_log.jsonl").read_text().splitlines()]

    packed_rows = []

    def counting_pack(samples: list, model) -> dict:
        packed_rows.append(len(samples))
        return pack_samples(samples, model)

    monkeypatch.setattr(fgvlm.sft.packing, "pack_samples", counting_pack)
    padded = train_losses(False)
    assert packed_rows == []
    packed = train_losses(True)
    assert packed_rows[:3] == [4, 4, 4]  # every training batch went through pack_samples
    assert len(packed) == 3
    assert packed == pytest.approx(padded, rel=1e-4)
    assert packed[-1] < packed[0]
