"""``SFTCollator``: instruction records -> padded model inputs with the loss on the answer tokens only.

Every sequence is rendered by the same functions ranking uses (the chat template's prompt with the generation
prompt, and the assistant turn as the suffix of the whole conversation), encoded through the processor exactly as
inference encodes the prompt (so BOS and image tokens are the same), and labelled -100 everywhere except the
answer's tokens: the token ids of the rendered answer after the rendered prompt, checked to be a suffix of the
processor's ids (the prompt's ids are a prefix of the conversation's). InstructBLIP's Q-Former reads the prompt
only; for encoder-decoder models (InstructBLIP-Flan-T5) the prompt goes to the encoder and the answer is the
decoder's labels.

A mixed-image record (``open-qa-mixcut``) becomes one or two sequences by the configured rule, each with a loss
weight (``lambda`` and ``1 - lambda``); the weights travel in the batch as ``loss_weights``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fgvlm.config import ConfigError
from fgvlm.models.chat import answer_token_ids, render_answer, render_prompt
from fgvlm.sft.data import InstructionRecord

if TYPE_CHECKING:
    import torch

IGNORE = -100
QFORMER_KEYS = ("qformer_input_ids", "qformer_attention_mask")
TEXT_PADS = {"attention_mask": 0, "mm_token_type_ids": 0, "token_type_ids": 0}
"""Per-token keys besides input_ids and labels, with their padding values."""
LMMS_ENGINE_SYSTEM = "You are a helpful assistant."
LMMS_ENGINE_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\n" + LMMS_ENGINE_SYSTEM + "<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>\n"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""The reference framework's (lmms-engine's) Qwen conversation: a system turn and a newline after the image."""


class SFTDataError(ConfigError):
    """A training sample that cannot be built as configured (no chat template, too long, merging tokens)."""


def _template_owner(processor: Any) -> Any:
    tokenizer = getattr(processor, "tokenizer", processor)
    return processor if getattr(processor, "chat_template", None) else tokenizer


def check_chat_template(processor: Any, family: str, model_name: str) -> None:
    """Refuse a model whose processor and tokenizer have no chat template: its prompts cannot be rendered."""
    if not getattr(_template_owner(processor), "chat_template", None):
        raise SFTDataError(
            f"{model_name} ({family}) has no chat template, so training prompts cannot be rendered as the model "
            "expects; give its processor one (processor.chat_template, saved as chat_template.jinja)"
        )


def nested_images(family: str) -> bool:
    """Whether the family's processor takes one list of images per sample (the backend's ``nested_images``)."""
    from fgvlm.models.families import get_family
    from fgvlm.registry import import_object

    return bool(getattr(import_object(get_family(family).backend), "nested_images", False))


def apply_prompt_format(processor: Any, family: str, prompt_format: str) -> None:
    """Give the processor (and its tokenizer) the lmms-engine template, or keep the model's own; a format the
    family's record does not list (``prompt_formats``) is refused."""
    from fgvlm.models.families import all_families, get_family

    if prompt_format not in get_family(family).prompt_formats:
        having = [name for name, record in all_families().items() if prompt_format in record.prompt_formats]
        raise SFTDataError(
            f"prompt_format {prompt_format} is not available for {family} (lmms-engine is the reference framework's "
            f"Qwen conversation; other families have other special tokens). Use prompt_format: chat-template "
            f"(families with {prompt_format}: {', '.join(having) or 'none'})"
        )
    if prompt_format == "chat-template":
        return
    processor.chat_template = LMMS_ENGINE_TEMPLATE
    tokenizer = getattr(processor, "tokenizer", None)
    if tokenizer is not None:
        tokenizer.chat_template = LMMS_ENGINE_TEMPLATE


# -- the collator -------------------------------------------------------------------------------------------------
class SFTCollator:
    """Records -> batches for ``transformers.Trainer``: ``input_ids``, ``attention_mask``, ``labels`` (-100 on the
    prompt and the pads), the processor's pixel tensors, and ``loss_weights`` (one per sequence)."""

    def __init__(
        self,
        processor: Any,
        family: str,
        *,
        encoder_decoder: bool = False,
        mix_loss: str = "lambda-nll",
        max_length: int | None = None,
        model_name: str = "the model",
        packing_model: Any = None,
    ):
        check_chat_template(processor, family, model_name)
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.family = family
        self.encoder_decoder = encoder_decoder
        self.mix_loss = mix_loss
        self.max_length = max_length
        self.packing_model = packing_model
        """A model given here makes ``__call__`` pack the sequences padding-free (``fgvlm.sft.packing``)."""
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (self.tokenizer.eos_token_id or 0)
        self.nested = nested_images(family)
        qformer = getattr(processor, "qformer_tokenizer", None)
        self.qformer_pad_id = (qformer.pad_token_id or 0) if qformer is not None else 0

    # -- one record -> sequences ------------------------------------------------------------------------------
    def answers(self, record: InstructionRecord) -> list[tuple[str, float]]:
        """(answer, loss weight) pairs for a record: one, or two for a mixed image under ``lambda-nll``."""
        if record.answer_b is None:
            return [(record.answer, 1.0)]
        lam = float(record.lam)
        if self.mix_loss == "lambda-nll":
            return [(record.answer, lam), (record.answer_b, 1.0 - lam)]
        first, second = (record.answer, record.answer_b) if lam >= 0.5 else (record.answer_b, record.answer)
        if self.mix_loss == "dominant":
            return [(first, 1.0)]
        return [(f"{first} and {second}", 1.0)]

    def encode_record(self, record: InstructionRecord) -> list[dict[str, Any]]:
        """Every training sequence of one record (the image is decoded once)."""
        image = record.load_image()
        return [self.encode_sample(record, answer, weight, image) for answer, weight in self.answers(record)]

    def _processor_inputs(self, image: Any, text: str) -> dict[str, Any]:
        images = [[image]] if self.nested else [image]
        return dict(self.processor(images=images, text=[text], return_tensors="pt"))

    def encode_sample(
        self, record: InstructionRecord, answer: str | None = None, weight: float = 1.0, image: Any = None
    ) -> dict[str, Any]:
        """One sequence: ids and labels (1-D), the processor's other tensors (batch 1), ``loss_weight``."""
        import torch

        answer = record.answer if answer is None else answer
        image = record.load_image() if image is None else image
        prompt_text = render_prompt(self.processor, record.question, family=self.family)
        answer_text = render_answer(self.processor, record.question, answer, family=self.family)
        try:
            answer_ids = answer_token_ids(self.tokenizer, prompt_text, answer_text)
        except ValueError as err:
            raise SFTDataError(f"training sample {record.id}: {err}") from None
        if self.encoder_decoder:
            inputs = self._processor_inputs(image, prompt_text)
            labels = torch.tensor(answer_ids)
        else:
            inputs = self._processor_inputs(image, prompt_text + answer_text)
            ids = inputs["input_ids"][0]
            if ids[len(ids) - len(answer_ids) :].tolist() != answer_ids:
                raise SFTDataError(
                    f"{record.id}: the processor's ids of the conversation do not end with the answer's ids "
                    f"({answer_text!r}); the prompt would not be a prefix of the conversation"
                )
            labels = torch.full_like(ids, IGNORE)
            labels[len(ids) - len(answer_ids) :] = ids[len(ids) - len(answer_ids) :]
            if any(key in inputs for key in QFORMER_KEYS):  # the Q-Former reads the instruction, never the answer
                prompt_inputs = self._processor_inputs(image, prompt_text)
                for key in QFORMER_KEYS:
                    inputs[key] = prompt_inputs[key]
        sample = {key: value for key, value in inputs.items() if hasattr(value, "shape")}
        sample["input_ids"] = sample["input_ids"][0]
        for key in TEXT_PADS:
            if key in sample:
                sample[key] = sample[key][0]
        for key in QFORMER_KEYS:
            if key in sample:
                sample[key] = sample[key][0]
        sample["labels"] = labels
        sample["loss_weight"] = float(weight)
        sample["id"] = record.id
        self._check_length(sample)
        return sample

    def _check_length(self, sample: dict[str, Any]) -> None:
        length = len(sample["input_ids"]) + (len(sample["labels"]) if self.encoder_decoder else 0)
        if self.max_length is not None and length > self.max_length:
            raise SFTDataError(
                f"training sample {sample['id']} has {length} tokens (image tokens included), more than "
                f"max_length {self.max_length}; raise max_length or bound the image size (model.max_pixels)"
            )

    # -- a batch --------------------------------------------------------------------------------------------------
    def __call__(self, records: list[InstructionRecord]) -> dict[str, Any]:
        samples = [s for record in records for s in self.encode_record(record)]
        if self.packing_model is not None:
            from fgvlm.sft.packing import pack_samples

            batch = pack_samples(samples, self.packing_model)
            batch["loss_weights"] = weights_tensor(samples)
            return batch
        return pad_samples(samples, self.pad_id, self.qformer_pad_id)


def weights_tensor(samples: list[dict[str, Any]]) -> torch.Tensor:
    import torch

    return torch.tensor([s["loss_weight"] for s in samples], dtype=torch.float32)


def _pad_1d(rows: list[torch.Tensor], value: int) -> torch.Tensor:
    import torch

    out = torch.full((len(rows), max(len(r) for r in rows)), value, dtype=rows[0].dtype)
    for index, row in enumerate(rows):
        out[index, : len(row)] = row
    return out


def _cat_padded(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate along dim 0, zero-padding the other dims to the largest (Idefics-style padded images are
    all-zero, which the model drops); Qwen's patch rows only differ in dim 0."""
    import torch

    shape = [max(t.shape[d] for t in tensors) for d in range(1, tensors[0].dim())]
    padded = []
    for tensor in tensors:
        if list(tensor.shape[1:]) != shape:
            grown = tensor.new_zeros((tensor.shape[0], *shape))
            grown[tuple(slice(0, n) for n in tensor.shape)] = tensor
            tensor = grown
        padded.append(tensor)
    return torch.cat(padded, dim=0)


def pad_samples(samples: list[dict[str, Any]], pad_id: int, qformer_pad_id: int = 0) -> dict[str, Any]:
    """Right-pad the per-token tensors (ids: ``pad_id``, labels: -100, masks: 0), concatenate the image tensors."""
    batch: dict[str, Any] = {
        "input_ids": _pad_1d([s["input_ids"] for s in samples], pad_id),
        "labels": _pad_1d([s["labels"] for s in samples], IGNORE),
    }
    for key, value in TEXT_PADS.items():
        if key in samples[0]:
            batch[key] = _pad_1d([s[key] for s in samples], value)
    if "qformer_input_ids" in samples[0]:
        batch["qformer_input_ids"] = _pad_1d([s["qformer_input_ids"] for s in samples], qformer_pad_id)
        batch["qformer_attention_mask"] = _pad_1d([s["qformer_attention_mask"] for s in samples], 0)
    skip = {"input_ids", "labels", "loss_weight", "id", *TEXT_PADS, *QFORMER_KEYS}
    for key in samples[0]:
        if key not in skip:
            batch[key] = _cat_padded([s[key] for s in samples])
    batch["loss_weights"] = weights_tensor(samples)
    return batch
