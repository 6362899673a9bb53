"""``objective: classify``: a linear head on pooled hidden states, trained jointly with the VLM (LoRA or full).

One forward per image, no generation: the image + question are encoded exactly as ``backend.embed`` encodes them
(the chat-templated prompt, left padding), the features are the backend's ``pooled_features`` (what ``embed``
returns, with gradients: mean over real tokens by default, image-mean, or last, of ``layer``), and the head (the
heads' ``ClassificationHead``: Dropout + Linear) gives class logits trained by cross-entropy; the head has its own
learning rate (``classify.head_lr``). Validation scores the head as ``fgvlm head train`` does (``heads.training.score``
on the validation subset). The final evaluation runs the head on the reloaded model's ``embed`` features and writes
``head.safetensors`` + ``head.json`` (the heads' ``head_info``) beside the metrics, and ``head/`` as a
``fgvlm head eval``-able head run, so ``fgvlm predict --model RUN/model --head RUN`` works unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fgvlm.config import to_dict
from fgvlm.sft.objectives.base import VALIDATION_BATCH, ModuleObjective

if TYPE_CHECKING:
    from torch import nn

    from fgvlm.models.base import ModelConfig


class ClassifyObjective(ModuleObjective):
    name = "classify"
    mixed_images = False

    def prepare(self) -> None:
        from fgvlm.heads.model import build_head
        from fgvlm.prompts import build_prompt, object_word
        from fgvlm.sft.data import instruction_records
        from fgvlm.sft.objectives.classify_model import ClassifyCollator, ClassifyModel, feature_dim

        setup, cfg = self.setup, self.cfg
        self.prompt = build_prompt("open-qa", ["-"], family=setup.family, object=object_word(cfg.data.dataset)).text
        self._collator = ClassifyCollator(setup.processor, setup.family, self.prompt, cfg.model.name)
        dim = feature_dim(setup.backend, self._collator, setup.train_records[0], cfg.classify.layer)
        head = build_head(dim, setup.dataset.num_classes, "linear", 512, cfg.classify.dropout, cfg.train.seed)
        head.to(setup.backend.device)
        self.model = ClassifyModel(setup.model, head, setup.backend, cfg.classify.pooling, cfg.classify.layer)
        self.val_records = []
        if setup.val_records:
            limit = len(setup.val_records)
            self.val_records = instruction_records(cfg, setup.dataset, cfg.val_split, setup.family, limit)
        self.head_lr = cfg.classify.head_lr or max(cfg.train.lr, 1e-3)

    def optimizer_groups(self, model: Any, lr: float) -> list[dict[str, Any]]:
        """The fresh head gets ``head_lr`` (a new linear layer needs a larger step than the pretrained model)."""
        head = [p for n, p in model.named_parameters() if p.requires_grad and n.startswith("head.")]
        rest = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("head.")]
        return [g for g in ({"params": rest, "lr": lr}, {"params": head, "lr": self.head_lr}) if g["params"]]

    def validate(self, model: Any) -> dict[str, Any]:
        from fgvlm.heads.training import score
        from fgvlm.sft.objectives.classify_model import classify_logits

        if not self.val_records:
            return {}
        numbers = score(*classify_logits(self.model, self._collator, self.val_records))
        return {"val_accuracy": numbers["accuracy"], "val_top5": numbers["top5"], "val_loss": numbers["loss"]}

    def use_merged(self, merged: nn.Module) -> None:
        self.model.vlm = merged

    def evaluate(
        self, backend: Any, model_cfg: ModelConfig, best: dict[str, Any] | None, is_main: bool
    ) -> dict[str, Any]:
        """The head on the reloaded model's ``embed`` features of eval_split; head files for predict and head eval."""
        import torch

        from fgvlm.heads.outputs import write_evaluation

        cfg, run, dataset = self.cfg, self.setup.run, self.setup.dataset
        split = dataset.split(cfg.eval_split)
        total = min(len(split), cfg.eval_limit or cfg.limit or len(split))
        chunks = []
        for start in range(0, total, VALIDATION_BATCH):
            images = [split[i].image for i in range(start, min(start + VALIDATION_BATCH, total))]
            chunks.append(backend.embed(images, self.prompt, cfg.classify.pooling, cfg.classify.layer))
        features = torch.cat(chunks)
        head = self.model.head.eval().cpu()
        if not is_main:
            return {}
        extra = {"pooling": cfg.classify.pooling, "layer": cfg.classify.layer}
        header = self.setup.results_header(model_cfg.name, 0.0)
        labels, ids = split.labels[:total], split.ids[:total]
        metrics = write_evaluation(run.path, header, head, features, labels, ids, dataset.class_names, extra)
        self._write_head(head, backend, model_cfg, best, metrics)
        return metrics

    def _write_head(
        self, head: nn.Module, backend: Any, model_cfg: ModelConfig, best: dict[str, Any] | None, metrics: dict
    ) -> None:
        """``head.safetensors`` + ``head.json`` in RUN and in ``RUN/head`` (with the config ``head eval`` reads)."""
        from fgvlm.heads.config import HeadTrainConfig
        from fgvlm.heads.features import backbone_signature
        from fgvlm.heads.model import head_info, save_head
        from fgvlm.runs import RunDir

        cfg, run = self.cfg, self.setup.run
        info = head_info(
            dataset=self.setup.dataset,
            backbone={"source": "local", "path": model_cfg.name, **backend.describe()},
            signature=backbone_signature(backend, model_cfg),
            model_config=to_dict(model_cfg),
            prompt=self.prompt,
            pooling=cfg.classify.pooling,
            layer=cfg.classify.layer,
            standardize=False,
            training="sft-classify",
            data_options=cfg.data.options,
            recipe={"objective": "classify", **to_dict(cfg.classify), "lr": cfg.train.lr, "head_lr": self.head_lr},
            best=(best["step"], best["val_accuracy"]) if best else (None, None),
            split=cfg.eval_split,
            metrics=metrics,
        )
        save_head(head, run.path, info)
        head_run = run / "head"
        head_run.mkdir(exist_ok=True)
        save_head(head, head_run, info)
        head_cfg = HeadTrainConfig(
            data=cfg.data,
            model=model_cfg,
            prompt=self.prompt,
            pooling=cfg.classify.pooling,
            layer=cfg.classify.layer,
            eval_split=cfg.eval_split,
            dropout=cfg.classify.dropout,
        )
        RunDir(head_run).write_config(head_cfg)
