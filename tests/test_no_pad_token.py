"""A tokenizer without a pad token (as many Llama/Mistral-based checkpoints ship): batches still work.

The loader gives such a tokenizer the eos token as pad (else unk), as the models' own processors do; a backend
handed a processor it did not load pads with the same fallback for the call only and leaves the tokenizer as it was.
"""

from __future__ import annotations

import json
import shutil

import pytest
from models_fixtures import synth_flower_images

torch = pytest.importorskip("torch")

from fgvlm.models.base import ModelConfig  # noqa: E402

PROMPTS = ["What is the name of the flower in this image?", "Which flower is this?", "Name it."]
NAMES = ["rose", "pink primrose", "bird of paradise"]


@pytest.fixture(scope="module")
def unpadded(tiny_model_dir, tmp_path_factory):
    """A copy of tiny Idefics2 (Mistral tokenizer with <s>, </s>, <unk>) whose tokenizer has no pad token."""
    folder = shutil.copytree(tiny_model_dir("idefics2"), tmp_path_factory.mktemp("no-pad") / "idefics2")
    config_file = folder / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config.pop("pad_token")
    config_file.write_text(json.dumps(config))
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(folder).pad_token is None  # really gone
    return folder


def check_batches(backend) -> None:
    images = synth_flower_images(3)
    batched = backend.generate(images, PROMPTS, max_new_tokens=4)
    single = [backend.generate([im], [p], max_new_tokens=4)[0] for im, p in zip(images, PROMPTS, strict=True)]
    assert batched == single
    cached = backend.rank(images[:2], PROMPTS[0], NAMES)
    brute = backend.rank(images[:2], PROMPTS[0], NAMES, reuse_prefix=False)
    torch.testing.assert_close(cached.sum, brute.sum, atol=1e-4, rtol=0)
    assert backend.embed(images, PROMPTS[0]).shape[0] == 3


def test_loader_pads_with_eos(unpadded):
    from fgvlm.models.loading import load_backend

    backend = load_backend(ModelConfig(name=str(unpadded)))
    assert backend.tokenizer.pad_token == backend.tokenizer.eos_token == "</s>"
    check_batches(backend)


def test_backend_pads_a_foreign_tokenizer_for_the_call_only(unpadded):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from fgvlm.models.families import backend_class

    processor = AutoProcessor.from_pretrained(unpadded)
    model = AutoModelForImageTextToText.from_pretrained(unpadded).eval()
    backend = backend_class("idefics2")(model, processor, {"family": "idefics2"})
    check_batches(backend)
    assert processor.tokenizer.pad_token is None  # not ours to change


def test_a_tokenizer_with_nothing_to_pad_with_is_named(unpadded):
    from transformers import AutoTokenizer

    from fgvlm.models.loading import ModelLoadError, ensure_pad_token

    tokenizer = AutoTokenizer.from_pretrained(unpadded)
    assert ensure_pad_token(tokenizer) == "eos_token" and tokenizer.pad_token == "</s>"
    bare = AutoTokenizer.from_pretrained(unpadded)
    bare.eos_token = bare.unk_token = None
    with pytest.raises(ModelLoadError, match="no pad, eos or unk token"):
        ensure_pad_token(bare)
