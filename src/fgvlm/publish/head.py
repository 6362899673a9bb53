"""A head run (``fgvlm head train``): the head's weights plus a pointer to the frozen base model it reads.

The repository holds ``head.safetensors`` and ``head.json`` (the prompt, pooling, layer, class names and the
backbone's signature: what ``fgvlm predict --head`` needs) and ``fgvlm/``; the base model is not copied: the card's
``base_model`` names it on the Hub (``--base-model`` when the backbone was a local folder, such as a fine-tuned
run's ``RUN/model`` published on its own).
"""

from __future__ import annotations

import json
from pathlib import Path

from fgvlm.publish.card import CardSpec, recipe_lines
from fgvlm.publish.sources import RunSource
from fgvlm.publish.staging import link_or_copy

HEAD_FILES = ("head.safetensors", "head.json")
RECIPE = (
    ("prompt", "Prompt", None),
    ("pooling", "Pooling", None),
    ("layer", "Hidden-state layer", None),
    ("head", "Head", None),
    ("standardize", "Feature standardisation", None),
    ("steps", "Steps", None),
    ("batch_size", "Batch size", None),
    ("lr", "Learning rate", None),
    ("weight_decay", "Weight decay", None),
    ("sweep", "Sweep", None),
    ("data.protocol", "Split protocol", None),
    ("limit", "Images per split (limit)", None),
)


class HeadModel(RunSource):
    """A run directory holding a trained head (and no fine-tuned model of its own)."""

    @classmethod
    def matches(cls, path: Path) -> bool:
        return path.is_dir() and all((path / name).is_file() for name in HEAD_FILES)

    def stage(self, folder: Path) -> None:
        for name in HEAD_FILES:
            link_or_copy(self.path / name, folder / name)
        self.stage_run_files(folder)
        self.write_card(folder, self.card_spec())

    def class_names(self) -> list[str]:
        info = json.loads((self.path / "head.json").read_text())
        return list(info.get("class_names") or super().class_names())

    def card_spec(self) -> CardSpec:
        info = json.loads((self.path / "head.json").read_text())
        backbone = (info.get("model_config") or {}).get("name") or (self.config.get("model") or {}).get("name")
        base, license_ = self.base_and_license(backbone)
        metrics = self.run.metrics or {}
        kind = (info.get("head") or {}).get("kind", "linear")
        summary = (
            f"A {kind} classification head on the frozen features of `{base or backbone}` ({info.get('pooling')} "
            f"pooling of layer {info.get('layer')}), trained with fgvlm on the "
            f"{metrics.get('num_classes')} classes of {metrics.get('dataset')} ({metrics.get('protocol')} split "
            "protocol). The repository holds the head only; the base model is loaded from its own repository."
        )
        return CardSpec(
            summary=summary,
            library_name="fgvlm",
            pipeline_tag="image-classification",
            base_model=base,
            license=license_,
            tags=["fgvlm", "fine-grained-classification", "linear-probe", str(metrics.get("dataset"))],
            datasets=self.training_datasets(),
            recipe=[f"Base model (frozen): `{base or backbone}`", *recipe_lines(self.config, RECIPE)],
            usage=self.usage(base or backbone),
        )

    def usage(self, base: str) -> str:
        repo, name = self.cfg.repo_id, self.cfg.repo_id.split("/")[-1]
        return "\n".join(
            [
                "```bash",
                "pip install fgvlm",
                f"hf download {repo} --local-dir {name}",
                f"fgvlm predict --model {base} --head {name} flower.jpg",
                "```",
                "",
                "`fgvlm predict` embeds the image with the head's recorded prompt, pooling and layer, checks that the "
                "base model matches the head's recorded backbone signature, and prints the top-5 classes.",
            ]
        )
