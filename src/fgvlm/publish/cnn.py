"""A CNN run (``fgvlm cnn train``): the evaluated checkpoint as a timm repository.

The weights metrics.json was computed with (``checkpoints/<checkpoint>.safetensors``: best, or last) go into the
architecture the run's config names, and ``timm.models.save_for_hf`` writes ``model.safetensors`` + ``config.json``
with the run's own preprocessing (input size, interpolation, mean/std, crop) and the class names as
``label_names``: ``timm.create_model("hf-hub:ORG/NAME", pretrained=True)`` gives the run's model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fgvlm.publish.card import CardSpec, recipe_lines
from fgvlm.publish.sources import PublishError, RunSource

PREPROCESSING = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")
RECIPE = (
    ("arch", "Architecture", None),
    ("pretrained", "Initial weights", None),
    ("image_size", "Image size", None),
    ("epochs", "Epochs", None),
    ("max_steps", "Max steps", None),
    ("batch_size", "Batch size", None),
    ("optimizer", "Optimizer", None),
    ("lr", "Learning rate", None),
    ("weight_decay", "Weight decay", None),
    ("warmup_epochs", "Warmup epochs", None),
    ("label_smoothing", "Label smoothing", None),
    ("crop_scale", "RandomResizedCrop scale", None),
    ("randaugment", "RandAugment", None),
    ("mixup", "MixUp", None),
    ("mixup_alpha", "MixUp alpha", ("mixup", True)),
    ("cutmix", "CutMix", None),
    ("cutmix_alpha", "CutMix alpha", ("cutmix", True)),
    ("ema", "Weight EMA", None),
    ("data.protocol", "Split protocol", None),
    ("limit", "Images per split (limit)", None),
)


class CNNModel(RunSource):
    """A run directory of ``fgvlm cnn train``: config with ``arch``, and safetensors checkpoints."""

    @classmethod
    def matches(cls, path: Path) -> bool:
        if not (path.is_dir() and (path / "config.yaml").is_file() and (path / "checkpoints").is_dir()):
            return False
        from fgvlm.config import load_yaml

        return "arch" in load_yaml(path / "config.yaml") and any((path / "checkpoints").glob("*.safetensors"))

    def checkpoint(self) -> Path:
        tag = (self.run.metrics or {}).get("checkpoint") or "best"
        path = self.path / "checkpoints" / f"{tag}.safetensors"
        if not path.is_file():
            raise PublishError(f"{path}: the checkpoint metrics.json was computed with is missing")
        return path

    def preprocessing(self) -> dict[str, Any]:
        recorded = self.run.meta.get("preprocessing") if isinstance(self.run.meta.get("preprocessing"), dict) else {}
        return {key: tuple(v) if isinstance(v, list) else v for key, v in recorded.items() if key in PREPROCESSING}

    def stage(self, folder: Path) -> None:
        from timm.models import save_for_hf

        from fgvlm.train.checkpoint import load_weights
        from fgvlm.train.classifier import create_classifier

        names = self.class_names()
        model, _ = create_classifier(str(self.config["arch"]), len(names), False)
        load_weights(self.checkpoint(), model)
        save_for_hf(
            model,
            str(folder),
            model_config={"label_names": names},
            safe_serialization=True,
            data_config=self.preprocessing() or None,
        )
        self.stage_run_files(folder)
        self.write_card(folder, self.card_spec())

    def card_spec(self) -> CardSpec:
        config, metrics = self.config, self.run.metrics or {}
        source = self.run.meta.get("model") if isinstance(self.run.meta.get("model"), dict) else {}
        hub_weights = source.get("hub_id")
        base, license_ = self.base_and_license(hub_weights)  # --base-model and --license win, as for every kind
        mixing = " with MixUp/CutMix" if config.get("mixup") or config.get("cutmix") else ""
        start = f"from `{base}`" if base else "from scratch" if not config.get("pretrained") else "from local weights"
        summary = (
            f"timm `{config.get('arch')}` trained {start}{mixing} with fgvlm on "
            f"the {metrics.get('num_classes')} classes of {metrics.get('dataset')} ({metrics.get('protocol')} split "
            f"protocol); the weights are the run's `{metrics.get('checkpoint', 'best')}` checkpoint."
        )
        return CardSpec(
            summary=summary,
            library_name="timm",
            pipeline_tag="image-classification",
            base_model=base,
            license=license_,
            tags=["fgvlm", "timm", "image-classification", "fine-grained-classification", str(metrics.get("dataset"))],
            datasets=self.training_datasets(),
            recipe=recipe_lines(config, RECIPE),
            usage=self.usage(),
        )

    def usage(self) -> str:
        repo = self.cfg.repo_id
        return "\n".join(
            [
                "```python",
                "import timm",
                "from PIL import Image",
                "",
                f'model = timm.create_model("hf-hub:{repo}", pretrained=True).eval()',
                "transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))",
                "probs = model(transform(Image.open('flower.jpg').convert('RGB')).unsqueeze(0)).softmax(-1)",
                "names = model.pretrained_cfg['label_names']",
                "top = probs[0].topk(min(5, len(names)))",
                "print([(names[i], round(p, 4)) for p, i in zip(top.values.tolist(), top.indices.tolist())])",
                "```",
            ]
        )
