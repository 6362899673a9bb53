"""Instruction records for fine-tuning: one question + answer (or two answers, for mixed images) per image.

``instruction_records`` is the one function the trainer calls: it turns a dataset split into records with the
prompt tasks of ``fgvlm.prompts`` (the same wording ``fgvlm eval`` shows the model, per family), deterministic for a
seed. ``open-qa-mixcut`` mixes each image with one of another class by MixUp or CutMix; the pair, lambda and the box
are kept on the record. Images stay lazy (a loader per record) until the collator asks for them.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fgvlm.prompts import build_prompt, item_seed, object_word
from fgvlm.sft.config import MIXCUT_TASK

if TYPE_CHECKING:
    from PIL import Image

    from fgvlm.data.base import Dataset
    from fgvlm.sft.config import SFTConfig


@dataclasses.dataclass
class InstructionRecord:
    """One training conversation: an image, the user's question and the assistant's answer.

    Mixed images (``open-qa-mixcut``) carry the second class too: ``answer_b``, ``label_b``, ``lam`` (the share of
    the first image), ``box`` (CutMix: the pasted region, x0, y0, x1, y1) and ``pair`` (the two source ids).
    """

    id: str
    image: Any
    """A PIL image, or a zero-argument function returning one (decoded when the collator needs it)."""
    question: str
    answer: str
    task: str
    label: int
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    answer_b: str | None = None
    label_b: int | None = None
    lam: float | None = None
    box: tuple[int, int, int, int] | None = None
    pair: tuple[str, str] | None = None

    def load_image(self) -> Image.Image:
        return self.image() if callable(self.image) else self.image


def pick_task(tasks: dict[str, float], seed: int, item_id: str) -> str:
    """One task for ``item_id`` drawn with the mixture's weights, stable for (seed, id)."""
    if len(tasks) == 1:
        return next(iter(tasks))
    rng = random.Random(item_seed(seed, f"task:{item_id}"))
    names = sorted(tasks)
    return rng.choices(names, weights=[tasks[n] for n in names])[0]


def instruction_records(
    cfg: SFTConfig, dataset: Dataset, split: str, family: str | None, limit: int | None = None
) -> list[InstructionRecord]:
    """Records of the first ``limit`` images of ``split`` (all when None) for the config's task or mixture."""
    records = dataset.split(split).records[:limit] if limit else dataset.split(split).records
    names = dataset.prompt_names
    options = {"object": object_word(cfg.data.dataset), **cfg.task_options}
    out = []
    for index, record in enumerate(records):
        task = pick_task(cfg.tasks, cfg.seed, record.id)
        base_task = "open-qa" if task == MIXCUT_TASK else task
        opts = options if base_task != "open-qa" else {"object": options["object"]}
        prompt = build_prompt(
            base_task, names, label=record.label, family=family, seed=item_seed(cfg.seed, record.id), **opts
        )
        item = InstructionRecord(
            id=record.id,
            image=_loader(dataset, record),
            question=prompt.text,
            answer=prompt.answer,
            task=task,
            label=record.label,
        )
        if task == MIXCUT_TASK:
            mix_record(item, dataset, records, index, cfg)
        out.append(item)
    return out


def _loader(dataset: Dataset, record: Any) -> Callable[[], Image.Image]:
    return lambda: dataset.load_image(record)


def mix_record(item: InstructionRecord, dataset: Dataset, records: list[Any], index: int, cfg: SFTConfig) -> None:
    """Pair ``item`` with an image of another class (seeded), draw lambda and the mode; its image mixes lazily."""
    import numpy as np

    rng = np.random.default_rng(item_seed(cfg.seed, f"mix:{item.id}"))
    others = [i for i, r in enumerate(records) if r.label != item.label]
    if not others:
        raise ValueError(f"{MIXCUT_TASK}: split has a single class; nothing to mix image {item.id} with")
    partner = records[others[int(rng.integers(len(others)))]]
    lam = float(rng.beta(cfg.mixcut.alpha, cfg.mixcut.alpha))
    mode = cfg.mixcut.mode if cfg.mixcut.mode != "both" else ("mixup", "cutmix")[int(rng.integers(2))]
    first, second = records[index], partner
    image_a = dataset.load_image(first)
    box = cutmix_box(image_a.size, lam, rng) if mode == "cutmix" else None
    if box is not None:
        width, height = image_a.size
        lam = 1.0 - (box[2] - box[0]) * (box[3] - box[1]) / (width * height)  # the share actually kept
    item.image = lambda: mix_images(dataset.load_image(first), dataset.load_image(second), lam, box)
    item.answer_b = dataset.prompt_names[partner.label]
    item.label_b = partner.label
    item.lam = lam
    item.box = box
    item.pair = (first.id, partner.id)
    item.extra["mix_mode"] = mode


def cutmix_box(size: tuple[int, int], lam: float, rng: Any) -> tuple[int, int, int, int]:
    """A box of area share about ``1 - lam`` centred at a random point, clipped to the image (x0, y0, x1, y1)."""
    width, height = size
    cut = (1.0 - lam) ** 0.5
    box_w, box_h = int(round(width * cut)), int(round(height * cut))
    cx, cy = int(rng.integers(width)), int(rng.integers(height))
    x0, x1 = max(cx - box_w // 2, 0), min(cx + box_w - box_w // 2, width)
    y0, y1 = max(cy - box_h // 2, 0), min(cy + box_h - box_h // 2, height)
    return x0, y0, x1, y1


def mix_images(
    image_a: Image.Image, image_b: Image.Image, lam: float, box: tuple[int, int, int, int] | None
) -> Image.Image:
    """MixUp (``box`` None: ``lam * a + (1 - lam) * b``) or CutMix (``b``'s pixels inside ``box``), at a's size."""
    from PIL import Image

    image_b = image_b.resize(image_a.size, Image.Resampling.BICUBIC)
    if box is None:
        return Image.blend(image_b, image_a, lam)
    mixed = image_a.copy()
    mixed.paste(image_b.crop(box), box[:2])
    return mixed
