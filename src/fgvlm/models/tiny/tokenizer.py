"""Tokenizers for tiny models, trained locally in ~20 ms: byte-level BPE over prompt text and the class names.

Byte-level BPE starts from all 256 byte symbols, so any text round-trips (unseen words just cost more tokens);
the merges learnt from the Flowers102 names keep class names short, as a real tokenizer would. Training is
deterministic: the same corpus and vocabulary size give the same ``tokenizer.json``.
"""

from __future__ import annotations

import string
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

# Sentences of the kind fgvlm sends to a model, so common prompt words become single tokens.
PROMPT_SENTENCES = (
    "What type of flower is in this image?",
    "What is the name of the flower in the photo? Answer with the flower's common name only.",
    "Which of these flowers is shown: {options}? Answer with one name from the list.",
    "This is a photo of a {name}, a type of flower.",
    "Describe the flower in this picture.",
    "Answer the question using a single word or phrase.",
    "You are a helpful assistant.",
    "system user assistant System: User: Assistant: Question: Answer: Short answer:",
    "A close-up photo of petals, leaves and a stem in a garden.",
)


def tokenizer_corpus() -> list[str]:
    """Prompt sentences, the 102 Flowers102 class names and their aliases, digits, letters and punctuation."""
    from fgvlm.registry import resource_json

    classes = list(resource_json("flowers102_classes.json"))
    names = resource_json("flowers102_aliases.json")
    aliases = [alias for values in names["aliases"].values() for alias in values] + list(names["display"].values())
    characters = [string.digits, string.ascii_lowercase, string.ascii_uppercase, string.punctuation]
    spelled = [" ".join(text) for text in characters]  # each character alone, also after a space
    # Names also appear capitalised and after a space (as they do inside sentences and answers).
    variants = [form for name in classes + aliases for form in (name, " " + name, name.capitalize())]
    return list(PROMPT_SENTENCES) + variants + characters + spelled


def train_bpe_tokenizer(
    special_tokens: list[str],
    *,
    bos: str | None = None,
    eos: str | None = None,
    pad: str | None = None,
    unk: str | None = None,
    add_bos: bool = False,
    add_eos: bool = False,
    vocab_size: int = 1024,
    extra_special_tokens: dict[str, str] | None = None,
) -> PreTrainedTokenizerBase:
    """A byte-level BPE tokenizer with ``special_tokens`` at ids 0..n-1, wrapped as a transformers fast tokenizer.

    ``add_bos`` / ``add_eos`` install a post-processor that adds them to every encoding, as the Llama (BOS) and
    T5 (EOS) tokenizers do; the Qwen and SmolVLM tokenizers add nothing. ``extra_special_tokens`` names
    model-specific tokens as tokenizer attributes (e.g. ``{"image_token": "<image>"}``), which processors read.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(tokenizer_corpus(), trainer)
    steps: list = [processors.ByteLevel(trim_offsets=False)]
    if add_bos or add_eos:
        head, tail = (f"{bos} " if add_bos else ""), (f" {eos}" if add_eos else "")
        single, pair = f"{head}$A{tail}", f"{head}$A{tail} {head}$B:1{tail}"
        used = [t for t, wanted in ((bos, add_bos), (eos, add_eos)) if wanted]
        steps.append(
            processors.TemplateProcessing(
                single=single, pair=pair, special_tokens=[(t, tok.token_to_id(t)) for t in used]
            )
        )
    tok.post_processor = processors.Sequence(steps)
    named = {"bos_token": bos, "eos_token": eos, "pad_token": pad, "unk_token": unk}
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        model_max_length=4096,
        extra_special_tokens=extra_special_tokens or {},
        **{key: value for key, value in named.items() if value is not None},
    )
    named_tokens = {value for value in named.values() if value}
    others = [t for t in special_tokens if t not in named_tokens]
    wrapped.add_special_tokens({"additional_special_tokens": others})
    return wrapped


def train_wordpiece_tokenizer(vocab_size: int = 1024) -> PreTrainedTokenizerBase:
    """An uncased BERT-style WordPiece tokenizer (``[CLS] text [SEP]``), the kind InstructBLIP's Q-Former reads."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=list(string.printable.strip()),
        show_progress=False,
    )
    tok.train_from_iterator(tokenizer_corpus(), trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        model_max_length=512,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
