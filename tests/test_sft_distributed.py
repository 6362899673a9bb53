"""Two CPU processes (gloo) train like one: the loss curve of a single process with the same global batch, and one
result set written.

Global batch 2 = 2 processes x 1 sample = 1 process x 1 sample x 2 accumulation steps: the same samples per step
(accelerate shards the one seeded sampler's batches across ranks in order) and the same loss (each micro-batch's
mean answer-token loss, averaged over the two).

- DDP: ``torchrun --nproc_per_node 2 -m fgvlm sft`` against ``fgvlm sft --grad-accum 2``, end to end (training log,
  saved model, final evaluation written once).
- FSDP: accelerate runs FSDP only on GPU-type process groups; on CPU it silently falls back to plain data parallel.
  So FSDP is checked with ``accelerate launch --config_file configs/accelerate/fsdp-full-shard.yaml`` on a plain
  ``transformers.Trainer`` script (this file's ``__main__``), with accelerate's state promoted to FSDP
  (:func:`fsdp_on_cpu`): the shipped config's FSDP2 wrapping of the Qwen3-VL layers, sharded parameters, same curve.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
STEPS = 4
SAMPLES = 8
QUESTION = "What is the name of the flower in this image?"


def encode_samples(processor: Any, count: int) -> list[dict]:
    """``count`` synthflowers training images with their class names as answers; labels -100 on the prompt."""
    from fgvlm.data import create_dataset

    dataset = create_dataset(dataset="synthflowers")
    train = dataset.split("train")
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    samples = []
    for index in range(count):
        record = train[index * 7]  # several classes
        image = record.image
        prompt_len = processor(images=[image], text=[prompt], return_tensors="pt")["input_ids"].shape[1]
        answer = dataset.class_names[record.label] + "<|im_end|>\n"
        sample = dict(processor(images=[image], text=[prompt + answer], return_tensors="pt"))
        sample["labels"] = sample["input_ids"].clone()
        sample["labels"][:, :prompt_len] = -100
        samples.append(sample)
    return samples


def collate(samples: list[dict]) -> dict:
    """Right-pad to the longest sample; pads get label -100 and attention 0; pixel tensors concatenated."""
    import torch

    length = max(s["input_ids"].shape[1] for s in samples)

    def pad(key: str, value: int) -> torch.Tensor:
        rows = [torch.nn.functional.pad(s[key][0], (0, length - s[key].shape[1]), value=value) for s in samples]
        return torch.stack(rows)

    batch = {key: pad(key, value) for key, value in [("input_ids", 0), ("labels", -100), ("attention_mask", 0)]}
    batch["mm_token_type_ids"] = pad("mm_token_type_ids", 0)
    batch["pixel_values"] = torch.cat([s["pixel_values"] for s in samples])
    batch["image_grid_thw"] = torch.cat([s["image_grid_thw"] for s in samples])
    return batch


def fsdp_on_cpu() -> None:
    """Let accelerate run FSDP on CPU processes, as it does on GPUs.

    accelerate switches FSDP on only for GPU-type process groups: on a CPU machine it silently runs the launcher's
    FSDP settings as plain data parallel (``MULTI_CPU``). torch's FSDP2 itself works on CPU with gloo, so after
    accelerate set its state up, promote ``MULTI_CPU`` to ``FSDP`` with the plugin built from the shipped config.
    """
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DistributedType

    original = AcceleratorState.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        plugin = kwargs.get("fsdp_plugin")
        if plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
            self.distributed_type = DistributedType.FSDP
            self.fsdp_plugin = plugin
            PartialState._shared_state["distributed_type"] = DistributedType.FSDP

    AcceleratorState.__init__ = init


def train(model_dir: str, out: str, grad_accum: int) -> None:
    """A plain ``transformers.Trainer`` run; rank 0 writes ``losses.json`` (the one result set)."""
    import torch
    import torch._dynamo  # noqa: F401  before any group exists (fgvlm.distributed.ProcessGroup.from_env says why)
    import torch.distributed as dist
    from transformers import AutoModelForImageTextToText, AutoProcessor, Trainer, TrainingArguments

    torch.set_num_threads(1)
    if os.environ.get("ACCELERATE_USE_FSDP") == "true" and not torch.cuda.is_available():
        fsdp_on_cpu()
    processor = AutoProcessor.from_pretrained(model_dir)
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32)
    args = TrainingArguments(
        output_dir=out,
        max_steps=STEPS,
        per_device_train_batch_size=1,
        gradient_accumulation_steps=grad_accum,
        learning_rate=2e-3,
        lr_scheduler_type="constant",
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        seed=0,
        use_cpu=True,
        dataloader_num_workers=0,
        remove_unused_columns=False,
        disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=encode_samples(processor, SAMPLES), data_collator=collate)
    trainer.train()
    if trainer.is_world_process_zero():
        log = [row for row in trainer.state.log_history if "loss" in row]
        result = {"world_size": args.world_size, "losses": [row["loss"] for row in log]}
        result["grad_norms"] = [row["grad_norm"] for row in log]
        result["distributed_type"] = trainer.accelerator.distributed_type.value
        # FSDP2 turns every parameter into a DTensor sharded over the ranks
        result["sharded"] = any(type(p).__name__ == "DTensor" for p in trainer.model.parameters())
        (Path(out) / "losses.json").write_text(json.dumps(result))
    if dist.is_initialized():  # the group accelerate opened: left open, its gloo threads can abort the exit
        dist.barrier()
        dist.destroy_process_group()


def launch(command: list[str], out: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "ACCELERATE_USE_CPU": "true"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])
    proc = subprocess.run(command, capture_output=True, text=True, timeout=180, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [p.name for p in out.iterdir()] == ["losses.json"], "one result set, written by rank 0 alone"
    return json.loads((out / "losses.json").read_text())


def sft_args(out: Path, objective: str = "generate") -> list[str]:
    """``fgvlm sft`` on tiny Qwen3-VL: 4 steps at a constant lr, logging every step, validation only at the end."""
    sets = ["train.eval_every=100", "train.log_every=1", "train.warmup_ratio=0", "train.scheduler=constant"]
    sets += ["train.eval_limit=2", "eval_limit=2"]  # validation and final evaluation: run, written once, kept short
    args = ["-m", "fgvlm", "sft", "--model", "tiny-qwen3-vl", "--dataset", "synthflowers", "--limit", str(SAMPLES)]
    args += ["--max-steps", str(STEPS), "--lr", "2e-3", "--set", "report_to=none", "--out", str(out)]
    args += ["--objective", objective]
    return args + [item for pair in (("--set", x) for x in sets) for item in pair]


def run_sft_command(command: list[str], out: Path, cache: Path, objective: str = "generate") -> list[dict]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "ACCELERATE_USE_CPU": "true"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])
    env["FGVLM_CACHE"] = str(cache)
    proc = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env, cwd=out.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count(f"sft {objective}") == 1, proc.stdout  # rank 0 alone reports
    assert (out / "done.json").is_file() and (out / "model" / "config.json").is_file()
    predictions = (out / "predictions.jsonl").read_text().splitlines()
    assert len(predictions) == json.loads((out / "metrics.json").read_text())["n"]  # one result set, not two
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["generate", "rank"])
def test_fgvlm_sft_ddp_two_processes_match_one(objective, tiny_model_dir, tiny_cache, tmp_path) -> None:
    """The run contract is the objective's too: the rank objective's RankModel goes through DDP like any model."""
    tiny_model_dir("qwen3-vl")  # build it once, before two ranks race to
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    ddp = [torchrun, "--standalone", "--nproc_per_node", "2", *sft_args(tmp_path / "ddp", objective)]
    two = run_sft_command(ddp, tmp_path / "ddp", tiny_cache, objective)
    single = [sys.executable, *sft_args(tmp_path / "one", objective), "--grad-accum", "2"]
    one = run_sft_command(single, tmp_path / "one", tiny_cache, objective)
    assert [row["step"] for row in two] == [row["step"] for row in one] == list(range(1, STEPS + 1))
    assert [row["train_loss"] for row in two] == pytest.approx([row["train_loss"] for row in one], rel=1e-4)
    assert [row["grad_norm"] for row in two] == pytest.approx([row["grad_norm"] for row in one], rel=1e-4)
    assert one[-1]["train_loss"] < one[0]["train_loss"]


@pytest.mark.slow
def test_fgvlm_sft_ddp_final_best_and_no_resume(tiny_model_dir, tiny_cache, tmp_path) -> None:
    """train.final=best under two processes: every rank loads rank 0's best step (the reload check passes on each);
    --no-resume over the finished run: rank 0 moves it aside before the other rank opens the folder."""
    tiny_model_dir("qwen3-vl")
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    out = tmp_path / "ddp"
    command = [torchrun, "--standalone", "--nproc_per_node", "2", *sft_args(out)]
    command += ["--set", "train.final=best", "--set", "train.eval_every=2"]
    run_sft_command(command, out, tiny_cache)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["final_weights"] == "best" and meta["best"]["step"] == 2  # not the last step: weights differ
    log = run_sft_command([*command, "--no-resume"], out, tiny_cache)
    assert [row["step"] for row in log] == list(range(1, STEPS + 1))
    assert len(list(tmp_path.glob("ddp.replaced-*"))) == 1


@pytest.fixture(scope="module")
def single(tiny_model_dir, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("single")
    return launch([sys.executable, __file__, str(tiny_model_dir("qwen3-vl")), str(out), "2"], out)


def assert_same_curve(result: dict, single: dict) -> None:
    assert result["world_size"] == 2 and single["world_size"] == 1
    assert len(result["losses"]) == len(single["losses"]) == STEPS
    assert result["losses"] == pytest.approx(single["losses"], rel=1e-4)
    assert result["grad_norms"] == pytest.approx(single["grad_norms"], rel=1e-4)
    assert single["losses"][-1] < single["losses"][0]  # it trains, so equal curves are not trivially equal


@pytest.mark.slow
def test_fsdp_two_processes_match_one(tiny_model_dir, single, tmp_path) -> None:
    accelerate = Path(sys.executable).with_name("accelerate")
    config = REPO / "configs" / "accelerate" / "fsdp-full-shard.yaml"
    command = [str(accelerate), "launch", "--config_file", str(config), "--num_processes", "2"]
    command += ["--mixed_precision", "no", "--main_process_port", "0", __file__]
    result = launch([*command, str(tiny_model_dir("qwen3-vl")), str(tmp_path), "1"], tmp_path)
    assert result["distributed_type"] == "FSDP" and result["sharded"]
    assert_same_curve(result, single)


if __name__ == "__main__":
    train(sys.argv[1], sys.argv[2], int(sys.argv[3]))
