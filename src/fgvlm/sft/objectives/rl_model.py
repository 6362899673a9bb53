"""The pieces ``objective: rl`` trains: the collator, the padded training batch of rollouts, the GRPO loss, the module.

``RLModel.forward`` is one GRPO step on a batch of images: without gradients, ``group_size`` answers per image
(``fgvlm.models.sampling.sample_answers``: one prefill, its KV cache shared by the group), each judged by the answer
matcher and rewarded; then, with gradients, ONE batched forward of every (image, prompt, answer) row gives the
log-probabilities of the sampled tokens, and ``policy_loss`` the clipped surrogate (plus beta * KL to the model with
its LoRA adapters disabled). The forward returns the loss, so DDP wraps the module like any other.

One padding side for every per-token tensor (``answered_batch``): each row is the processor's prompt tokens, then
the answer, then padding on the RIGHT, for ``input_ids``, ``attention_mask`` and the M-RoPE ``mm_token_type_ids``
alike (the prompt's types, then zeros for the answer). Right padding keeps each row's real tokens at the positions
they have alone, so the batched log-probabilities equal one forward per row (``tests/test_sft_rl.py``); a
per-token tensor padded on the other side (trl#5785) moves the image tokens' positions and is caught there.

Sampling draws from a generator seeded by (train seed, optimizer step, image id): the same rollouts after a resume,
and on any number of processes (each image's rollouts depend on nothing else).
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from fgvlm.sft.objectives.rewards import Rollout, format_ok

if TYPE_CHECKING:
    from PIL import Image

    from fgvlm.sft.config import RLOptions
    from fgvlm.sft.data import InstructionRecord

SEQUENCE_KEYS = ("input_ids", "attention_mask", "mm_token_type_ids", "token_type_ids")
"""Processor outputs with one value per token of the language model's sequence (padded together)."""
THINK_INSTRUCTION = " First think about the question inside <think> </think> tags, then give the answer."
"""Appended to the question with ``rl.thinking: on`` (the reasoning is stripped before matching)."""


class RLCollator:
    """Records -> ``records``, ``images``, ``prompts`` (the eval task's ``Prompt``) and ``texts`` (rendered)."""

    def __init__(self, scorers: dict[str, Any], backend: Any, thinking: bool):
        self.scorers = scorers
        self.backend = backend
        self.prompt_suffix = THINK_INSTRUCTION if thinking else ""

    def prompt(self, record: InstructionRecord) -> Any:
        from fgvlm.prompts.instructions import split_task
        from fgvlm.sft.collator import SFTDataError

        prompt = self.scorers[split_task(record.task)[0]].prompt(record)
        if prompt.text != record.question:
            raise SFTDataError(f"training sample {record.id}: its question differs from the one evaluation asks")
        return prompt

    def __call__(self, records: list[InstructionRecord]) -> dict[str, Any]:
        prompts = [self.prompt(record) for record in records]
        suffix = self.prompt_suffix
        return {
            "records": records,
            "images": [record.load_image() for record in records],
            "prompts": prompts,
            "texts": [self.backend.render_prompt(prompt.text + suffix) for prompt in prompts],
        }


def answered_batch(
    processor: Any, images: list[Image.Image], texts: list[str], answers: list[list[int]], nested: bool, pad_id: int
) -> tuple[dict[str, Any], torch.Tensor]:
    """Processor inputs of each (image, rendered prompt) followed by its answer ids, and the ``[R, L]`` mask of the
    answer positions. Every per-token tensor is padded on the right: the prompt's values, the answer's (its ids;
    attention 1; token types 0 = text), then padding (pad id, 0)."""
    images_arg = [[image] for image in images] if nested else images
    batch = dict(processor(images=images_arg, text=texts, return_tensors="pt", padding=True, padding_side="right"))
    prompt_lengths = batch["attention_mask"].sum(dim=1).tolist()
    length = max(n + len(a) for n, a in zip(prompt_lengths, answers, strict=True))
    answer_mask = torch.zeros(len(texts), length, dtype=torch.bool)
    for key in [k for k in SEQUENCE_KEYS if k in batch]:
        source = batch[key]
        out = source.new_full((len(texts), length), pad_id if key == "input_ids" else 0)
        for row, (n, answer) in enumerate(zip(prompt_lengths, answers, strict=True)):
            if key == "attention_mask" and not bool(source[row, :n].all()):
                raise ValueError("the processor padded a prompt on the left; answered_batch needs its tokens first")
            out[row, :n] = source[row, :n]
            values = answer if key == "input_ids" else [1 if key == "attention_mask" else 0] * len(answer)
            out[row, n : n + len(answer)] = torch.tensor(values, dtype=out.dtype)
            answer_mask[row, n : n + len(answer)] = True
        batch[key] = out
    return batch, answer_mask


def token_logprobs(
    model: Any, inputs: dict[str, Any], answer_mask: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability (at ``temperature``: the sampling distribution) and entropy of every answer token, flat in
    row-major order; the language-model head runs on the positions that predict an answer token only."""
    answer_mask = answer_mask.to(inputs["input_ids"].device)
    keep = torch.zeros_like(answer_mask)
    keep[:, :-1] = answer_mask[:, 1:]
    logits = model(**inputs, logits_to_keep=keep, use_cache=False).logits
    if logits.dim() == 3:  # a model that ignored logits_to_keep: select the positions here
        logits = logits[keep]
    logits = logits if logits.dtype == torch.float64 else logits.float()
    logprobs = torch.log_softmax(logits / temperature, dim=-1)
    targets = inputs["input_ids"][answer_mask]
    picked = logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    entropy = -(logprobs.exp() * logprobs).sum(-1).detach()
    return picked, entropy


def group_advantages(rewards: torch.Tensor, scale: bool) -> torch.Tensor:
    """``[B, G]`` rewards -> advantages: reward minus the group mean, over the group's std + 1e-4 when ``scale``
    (GRPO, DAPO; Dr. GRPO does not divide)."""
    centred = rewards - rewards.mean(dim=1, keepdim=True)
    return centred / (rewards.std(dim=1, keepdim=True) + 1e-4) if scale else centred


def policy_loss(
    logp: torch.Tensor,
    old: torch.Tensor,
    advantages: torch.Tensor,
    rows: torch.Tensor,
    kept: torch.Tensor,
    options: RLOptions,
    ref: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The GRPO loss of flat answer tokens (``rows``: each token's answer), and its clip fraction and KL.

    Per token: ``-min(rho * A, clip(rho, 1 - clip_low, 1 + clip_high) * A) + kl * KL`` with ``rho = exp(logp -
    old)`` and the k3 estimator ``KL = exp(ref - logp) - (ref - logp) - 1``. ``kept`` ``[R]`` (1/0) leaves answers
    out (groups of equal rewards with ``skip_equal_groups``). Aggregation (``options.loss``): grpo = token mean per
    answer, then mean over answers; dr-grpo = token sum / max_new_tokens per answer, then mean; dapo = sum over all
    tokens / their number.
    """
    ratio = torch.exp(logp - old)
    a = advantages.to(logp.dtype)[rows]
    clipped = torch.clamp(ratio, 1 - options.clip_low, 1 + options.clip_high)
    per_token = -torch.minimum(ratio * a, clipped * a)
    stats = {"clip_fraction": float(((ratio * a) > (clipped * a)).float().mean())}
    if ref is not None:
        delta = ref - logp
        kl = torch.exp(delta) - delta - 1
        per_token = per_token + options.kl * kl
        stats["kl"] = float(kl.detach().mean())
    weight = kept.to(logp.dtype)[rows]
    if options.loss == "dapo":
        return (per_token * weight).sum() / weight.sum().clamp(min=1), stats
    per_answer = torch.zeros(len(kept), dtype=logp.dtype, device=logp.device).index_add(0, rows, per_token * weight)
    if options.loss == "grpo":
        counts = torch.bincount(rows, minlength=len(kept)).clamp(min=1)
        per_answer = per_answer / counts.to(logp.dtype)
    else:
        per_answer = per_answer / options.answer_tokens
    return per_answer.sum() / kept.to(logp.dtype).sum().clamp(min=1), stats


def rollout_seed(seed: int, step: int, record_id: str) -> int:
    """A sampling seed per (train seed, optimizer step, image): stable across processes and resumes."""
    digest = hashlib.sha256(f"{seed}:{step}:{record_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


class RLModel(nn.Module):
    """The VLM (possibly PEFT-wrapped; sampled through its backend) whose forward is one GRPO loss."""

    def __init__(self, vlm: nn.Module, backend: Any, options: RLOptions, judge: Any, seed: int, log: Path | None):
        super().__init__()
        self.vlm = vlm
        self.backend = backend  # not a submodule: it runs self.vlm's base model, whose parameters self.vlm holds
        self.options = options
        self.judge = judge
        """``(record, prompt, tokens, finished) -> (Rollout, reward)``."""
        self.seed = seed
        self.log = log
        """RUN/rollouts.jsonl (None: not written, e.g. on processes other than the main one)."""
        self.step = 0
        """Optimizer steps done (set before each step by the objective's callback)."""
        self.stored: tuple[int, Any] | None = None
        self.metrics: dict[str, list[float]] = defaultdict(list)

    def forward(
        self, records: list[InstructionRecord], images: list[Any], prompts: list[Any], texts: list[str]
    ) -> dict[str, torch.Tensor]:
        options = self.options
        cycle = self.step // options.updates_per_batch
        reuse = options.updates_per_batch > 1 and self.stored is not None and self.stored[0] == cycle
        if not reuse:  # new rollouts (every micro-batch; with updates_per_batch > 1, once per cycle of steps)
            self.stored = (cycle, self.rollouts(records, images, prompts, texts, cycle))
        judged, rewards, inputs, answer_mask, old = self.stored[1]
        inputs = self.backend.to_model(inputs)
        logp, entropy = token_logprobs(self.vlm, inputs, answer_mask, options.temperature)
        if old is None:
            old = logp.detach()
            if options.updates_per_batch > 1:
                self.stored = (cycle, (judged, rewards, inputs, answer_mask, old))
        ref = None
        if options.kl > 0:
            with torch.no_grad(), self.vlm.disable_adapter():
                ref = token_logprobs(self.vlm, inputs, answer_mask, options.temperature)[0]
        rows = answer_mask.nonzero()[:, 0].to(logp.device)
        advantages = group_advantages(rewards, scale=options.loss != "dr-grpo").reshape(-1).to(logp.device)
        varied = rewards.std(dim=1) > 0
        kept = (
            varied.repeat_interleave(options.group_size) if options.skip_equal_groups else torch.ones(len(answer_mask))
        )
        loss, stats = policy_loss(logp, old, advantages, rows, kept.to(logp.device), options, ref)
        self.record_metrics(judged, rewards, answer_mask, entropy, stats)
        return {"loss": loss}

    def rollouts(self, records: list, images: list, prompts: list, texts: list[str], cycle: int) -> tuple:
        """Sample and judge ``group_size`` answers per image; the padded batch of every row; write the log."""
        from fgvlm.models.sampling import sample_answers

        options, backend = self.options, self.backend
        judged, rewards, answers = [], [], []
        for record, image, prompt, text in zip(records, images, prompts, texts, strict=True):
            generator = torch.Generator(device=backend.device).manual_seed(rollout_seed(self.seed, cycle, record.id))
            samples = sample_answers(
                backend,
                image,
                text,
                options.group_size,
                options.answer_tokens,
                temperature=options.temperature,
                top_p=options.top_p,
                generator=generator,
            )
            group = [self.judge(record, prompt, t, f) for t, f in zip(samples.tokens, samples.finished, strict=True)]
            judged.append([rollout for rollout, _ in group])
            rewards.append([reward for _, reward in group])
            answers.extend(samples.tokens)
        rewards_t = torch.tensor(rewards, dtype=torch.float64)
        repeated = [x for x in images for _ in range(options.group_size)]
        texts_r = [x for x in texts for _ in range(options.group_size)]
        pad_id = backend.tokenizer.pad_token_id if backend.tokenizer.pad_token_id is not None else answers[0][-1]
        inputs, answer_mask = answered_batch(
            backend.processor, repeated, texts_r, answers, backend.nested_images, pad_id
        )
        self.write_log(records, judged, rewards, answers)
        return judged, rewards_t, inputs, answer_mask, None

    def write_log(self, records: list, judged: list[list[Rollout]], rewards: list[list[float]], answers: list) -> None:
        """Every rollout of a sampled step to RUN/rollouts.jsonl: what was said, what the matcher read, the reward."""
        step = self.step + 1
        if self.log is None or not (step == 1 or step % self.options.log_rollouts_every == 0):
            return
        lines = []
        for index, (record, group, group_rewards) in enumerate(zip(records, judged, rewards, strict=True)):
            for sample, (rollout, reward) in enumerate(zip(group, group_rewards, strict=True)):
                lines.append(
                    {
                        "step": step,
                        "id": record.id,
                        "sample": sample,
                        "target": rollout.target,
                        "text": rollout.text,
                        "answer": rollout.answer,
                        "matched": rollout.strict,
                        "matched_lenient": rollout.lenient,
                        "finished": rollout.finished,
                        "tokens": len(answers[index * self.options.group_size + sample]),
                        "reward": reward,
                    }
                )
        with self.log.open("a") as handle:
            handle.writelines(json.dumps(line) + "\n" for line in lines)

    def record_metrics(
        self, judged: list, rewards: torch.Tensor, answer_mask: torch.Tensor, entropy: torch.Tensor, stats: dict
    ) -> None:
        """Per-step numbers for train_log.jsonl / TensorBoard (averaged over the steps between two log lines)."""
        flat = [rollout for group in judged for rollout in group]
        values = {
            "reward_mean": float(rewards.mean()),
            "reward_std": float(rewards.std(dim=1).mean()),
            "zero_variance_groups": float((rewards.std(dim=1) == 0).double().mean()),
            "rollout_accuracy": sum(r.strict == r.target for r in flat) / len(flat),
            "answer_length": float(answer_mask.sum(dim=1).double().mean()),
            "truncated": sum(not r.finished for r in flat) / len(flat),
            "entropy": float(entropy.mean()),
            **stats,
        }
        for key, value in values.items():
            self.metrics[key].append(value)

    def drain_metrics(self) -> dict[str, float]:
        """The mean of each number since the last call (then forgotten)."""
        out = {key: sum(values) / len(values) for key, values in self.metrics.items() if values}
        self.metrics.clear()
        return out


def judge_rollout(backend: Any, scorer_for: Any, thinking: bool, format_reward: float, reward: Any) -> Any:
    """A judge for ``RLModel``: decode the answer (without its stop id), read it with the task's matchers,
    reward it (plus the format reward with thinking on; 0 for an answer cut off)."""

    def judge(record: InstructionRecord, prompt: Any, tokens: list[int], finished: bool) -> tuple[Rollout, float]:
        scorer = scorer_for(record)
        answer, text = backend.decode([tokens[:-1] if finished else tokens], return_raw=True)[0]
        strict, lenient = scorer.parse(answer, prompt)
        target = scorer.kind.base_record(record.id, record.label, prompt)["label"]
        rollout = Rollout(text, answer, target, strict, lenient, finished)
        value = reward(rollout)
        if thinking and finished and format_ok(text):
            value += format_reward
        return rollout, float(value)

    return judge
