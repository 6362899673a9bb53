"""A fine-tuned VLM run (``fgvlm sft``, every objective, and RL runs): ``RUN/model`` as a transformers repository.

The repository root is ``RUN/model`` as it is (config, safetensors weights, generation config, processor, tokenizer
and chat template: ``AutoModelForImageTextToText`` / ``AutoProcessor.from_pretrained(ORG/NAME)`` load it), plus the
classify objective's head (``head.safetensors`` + ``head.json``, what ``fgvlm predict --head`` reads), ``fgvlm/``
(config, metrics, training log, curves) and, with ``--adapter`` on a LoRA run, ``adapter/`` (the adapter alone).
"""

from __future__ import annotations

from pathlib import Path

from fgvlm.publish.card import CardSpec, recipe_lines
from fgvlm.publish.sources import PublishError, RunSource
from fgvlm.publish.staging import link_or_copy, link_tree

MODEL_DIR = "model"
HEAD_FILES = ("head.safetensors", "head.json")
UNSAFE_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.pkl", "*.ckpt")


def mixes_images(config: dict) -> bool:
    """Whether a run's config trained on MixUp/CutMix images: ``images: mixcut`` or any ``<task>-mixcut`` task."""
    from fgvlm.prompts.instructions import split_task

    tasks = list(config.get("mix") or {}) or [config.get("task") or ""]
    return config.get("images") == "mixcut" or any(split_task(task)[1] for task in tasks)


RECIPE = (
    ("method", "Fine-tuning", None),
    ("objective", "Objective", None),
    ("task", "Instruction task", None),
    ("mix", "Task mix", None),
    ("freeze", "Frozen parts", None),
    ("lora.r", "LoRA rank", ("method", "lora")),
    ("lora.alpha", "LoRA alpha", ("method", "lora")),
    ("lora.dropout", "LoRA dropout", ("method", "lora")),
    ("train.lr", "Learning rate", None),
    ("train.scheduler", "Schedule", None),
    ("train.warmup_ratio", "Warmup ratio", None),
    ("train.max_steps", "Optimizer steps", None),
    ("train.per_device_batch_size", "Batch per device", None),
    ("train.grad_accum", "Gradient accumulation", None),
    ("train.final", "Final weights", None),
    ("prompt_format", "Prompt format", None),
    ("packing", "Packing", None),
    ("mixcut", "MixUp/CutMix", mixes_images),
    ("classify", "Classification head", ("objective", "classify")),
    ("data.protocol", "Split protocol", None),
    ("limit", "Images per split (limit)", None),
)
"""Config keys the card's Training section names, when the run's config has them (the whole config is uploaded)."""


class FineTunedModel(RunSource):
    """A run whose ``model/`` folder is a saved transformers checkpoint."""

    @classmethod
    def matches(cls, path: Path) -> bool:
        return path.is_dir() and (path / MODEL_DIR / "config.json").is_file()

    def stage(self, folder: Path) -> None:
        model_dir = self.path / MODEL_DIR
        unsafe = sorted(p.name for pattern in UNSAFE_WEIGHTS for p in model_dir.rglob(pattern))
        if unsafe or not any(model_dir.glob("*.safetensors")):
            raise PublishError(f"{model_dir}: weights must be safetensors (found {unsafe or 'no .safetensors file'})")
        link_tree(model_dir, folder)
        has_head = all((self.path / name).is_file() for name in HEAD_FILES)
        if has_head:
            for name in HEAD_FILES:
                link_or_copy(self.path / name, folder / name)
        if self.cfg.adapter:
            from fgvlm.publish.adapter import write_adapter

            if self.config.get("method") != "lora":
                raise PublishError(f"{self.path}: --adapter needs a LoRA run (method: {self.config.get('method')})")
            write_adapter(self.path, folder / "adapter", self.cfg.base_model)
        self.stage_run_files(folder)
        self.write_card(folder, self.card_spec(has_head))

    def card_spec(self, has_head: bool) -> CardSpec:
        config = self.config
        base_name = (config.get("model") or {}).get("name")
        base, license_ = self.base_and_license(base_name)
        results = self.run.metrics or {}
        objective = config.get("objective", "generate")
        method = config.get("method", "full")
        summary = (
            f"`{base or base_name}` fine-tuned with fgvlm ({self.run.kind}, "
            f"{objective} objective, {method} fine-tuning) for fine-grained recognition of the "
            f"{results.get('num_classes')} classes of {results.get('dataset')} ({results.get('protocol')} split "
            "protocol). The merged weights load like any transformers vision-language model."
        )
        tags = ["fgvlm", "fine-grained-classification", "vision-language", str(results.get("dataset")), self.run.kind]
        tags += [method] + (["peft", "lora"] if method == "lora" else [])
        recipe = [f"Base model: `{base or base_name}`", *recipe_lines(config, RECIPE)]
        if self.cfg.adapter:
            recipe.append("`adapter/`: the LoRA adapter alone (PEFT), for `PeftModel.from_pretrained` on the base")
        return CardSpec(
            summary=summary,
            library_name="transformers",
            pipeline_tag="image-text-to-text",
            base_model=base,
            license=license_,
            tags=tags,
            datasets=self.training_datasets(),
            recipe=recipe,
            usage=self.usage(has_head),
        )

    def question(self) -> str:
        """The open-qa question evaluation asks, in the words this model was trained and scored with (the family the
        run recorded, else the one its saved config names)."""
        import json

        from fgvlm.heads.predict import zero_shot_prompt
        from fgvlm.models.families import UnknownFamilyError, family_for_config

        family = self.run.meta.get("family")
        if family is None:
            try:
                family = family_for_config(json.loads((self.path / MODEL_DIR / "config.json").read_text())).name
            except UnknownFamilyError:
                family = None
        return zero_shot_prompt(str(self.config["data"]["dataset"]), family)

    def usage(self, has_head: bool) -> str:
        repo, metrics = self.cfg.repo_id, self.run.metrics or {}
        root = " --root DATA" if (self.config.get("data") or {}).get("root") else ""
        data = f"--dataset {metrics.get('dataset')}{root} --protocol {metrics.get('protocol')}"
        text = [
            "```python",
            "from transformers import AutoModelForImageTextToText, AutoProcessor",
            "",
            f'model = AutoModelForImageTextToText.from_pretrained("{repo}")',
            f'processor = AutoProcessor.from_pretrained("{repo}")',
            "messages = [{'role': 'user', 'content': [{'type': 'image', 'url': 'flower.jpg'},",
            f"                                          {{'type': 'text', 'text': {self.question()!r}}}]}}]",
            "inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,",
            "                                       return_dict=True, return_tensors='pt')",
            "answer = model.generate(**inputs, max_new_tokens=24, do_sample=False)",
            "print(processor.decode(answer[0, inputs['input_ids'].shape[1]:], skip_special_tokens=True))",
            "```",
            "",
            "With fgvlm (the run's evaluation, by ranking every class name, or generate-and-parse):",
            "",
            "```bash",
            f"fgvlm eval --model {repo} {data} --mode rank --out runs/eval",
        ]
        if has_head:
            text += [
                f"hf download {repo} --local-dir {repo.split('/')[-1]}",
                f"fgvlm predict --model {repo} --head {repo.split('/')[-1]} flower.jpg   # the classify head",
            ]
        return "\n".join([*text, "```"])
