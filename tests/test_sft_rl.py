"""``objective: rl`` (GRPO): the batched, right-padded training forward gives each sampled token the log-probability a
forward of that sample alone gives (float64, every decoder-only family), a misaligned per-token tensor is caught,
the shared-prefix sampler draws what one full forward per step would, banned tokens and several stop ids by hand,
the loss and advantages by hand, the matcher rewards (strict vs lenient, cut-off answers), the mechanism (a reward
for one fixed answer makes it several times likelier, every family), and the run end to end (files, resume equal
to uninterrupted, two processes equal one).

Run as a script (``python tests/test_sft_rl.py ARGS``) it is ``fgvlm rl ARGS`` with this file's ``vowel`` reward
registered: the multi-process test launches it under torchrun.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from models_fixtures import synth_flower_images  # noqa: E402
from sft_fixtures import run_killed_at_step, steps_run  # noqa: E402

from fgvlm.config import ConfigError, from_dict, resolve_config  # noqa: E402
from fgvlm.models.families import backend_class, family_names, get_family  # noqa: E402
from fgvlm.sft.config import RLConfig, RLOptions  # noqa: E402
from fgvlm.sft.objectives.rewards import REWARDS, Rollout, format_ok, lenient_reward, match_reward  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
QUESTION = "What is the name of the flower in this image? Answer with the name only."
RL_FAMILIES = [name for name in family_names() if not get_family(name).encoder_decoder]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def vowel_reward(rollout: Rollout) -> float:
    """A reward a random tiny model earns about a third of the time: the answer opens with a vowel."""
    return float(rollout.text[:1].lower() in "aeiou")


def float64_backend(tiny_model_dir, family: str):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir(family), dtype=torch.float64).eval()
    processor = AutoProcessor.from_pretrained(tiny_model_dir(family))
    return backend_class(family)(model, processor, {"family": family})


def answers_of_different_lengths(backend) -> list[list[int]]:
    """Three answers (a name and its stop id) of 1..n tokens: the batch pads them to different lengths."""
    from fgvlm.models.sampling import stop_token_ids

    stop = stop_token_ids(backend)[0]
    tokenize = backend.tokenizer
    return [tokenize(text, add_special_tokens=False)["input_ids"] + [stop] for text in ("rose", "pink primrose", "a")]


def alone_logprobs(backend, image, text: str, answer: list[int]) -> torch.Tensor:
    """The answer's token log-probabilities from one forward of this sample alone (processor prompt + ids, no
    padding, full logits)."""
    nested = [[image]] if backend.nested_images else [image]
    inputs = dict(backend.processor(images=nested, text=[text], return_tensors="pt"))
    n = inputs["input_ids"].shape[1]
    inputs["input_ids"] = torch.cat([inputs["input_ids"], torch.tensor([answer])], dim=1)
    inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
    if "mm_token_type_ids" in inputs:
        inputs["mm_token_type_ids"] = torch.cat([inputs["mm_token_type_ids"], torch.zeros(1, len(answer))], 1).long()
    logits = backend.model(**backend.to_model(inputs), use_cache=False).logits[0]
    logprobs = torch.log_softmax(logits[n - 1 : -1].double(), dim=-1)
    return logprobs.gather(-1, torch.tensor(answer)[:, None]).squeeze(-1)


def batched_logprobs(backend, images, texts, answers, corrupt=None) -> torch.Tensor:
    from fgvlm.sft.objectives.rl_model import answered_batch, token_logprobs

    pad = backend.tokenizer.pad_token_id
    inputs, mask = answered_batch(backend.processor, images, texts, answers, backend.nested_images, pad)
    if corrupt is not None:
        corrupt(inputs)
    with torch.no_grad():
        return token_logprobs(backend.model, backend.to_model(inputs), mask, 1.0)[0]


@pytest.mark.parametrize("family", RL_FAMILIES)
def test_batched_training_logprobs_equal_each_sample_alone(family, tiny_model_dir):
    """Two images x three answers of different lengths in one right-padded batch: every answer token's
    log-probability equals a forward of that sample alone, within 1e-9 (float64; measured ~1e-15)."""
    backend = float64_backend(tiny_model_dir, family)
    images = synth_flower_images(2)
    text = backend.render_prompt(QUESTION)
    answers = answers_of_different_lengths(backend)
    rows = [(image, answer) for image in images for answer in answers]
    with torch.no_grad():
        batched = batched_logprobs(backend, [r[0] for r in rows], [text] * len(rows), [r[1] for r in rows])
        alone = torch.cat([alone_logprobs(backend, image, text, answer) for image, answer in rows])
    assert batched.shape == alone.shape == (sum(len(a) for _, a in rows),)
    torch.testing.assert_close(batched, alone, atol=1e-9, rtol=1e-9)


def test_a_per_token_tensor_padded_on_the_other_side_is_caught(tiny_model_dir):
    """trl#5785: ``mm_token_type_ids`` padded on the left while the ids are padded on the right moves the image
    tokens' M-RoPE positions of the shorter rows: their log-probabilities change, and the comparison fails."""
    backend = float64_backend(tiny_model_dir, "qwen3-vl")
    image = synth_flower_images(1)[0]
    text = backend.render_prompt(QUESTION)
    answers = answers_of_different_lengths(backend)
    alone = torch.cat([alone_logprobs(backend, image, text, answer) for answer in answers])

    def left_pad_token_types(inputs):
        types, mask = inputs["mm_token_type_ids"], inputs["attention_mask"]
        for row in range(len(types)):
            types[row] = torch.roll(types[row], int((mask[row] == 0).sum()))  # padding moved to the left

    good = batched_logprobs(backend, [image] * 3, [text] * 3, answers)
    torch.testing.assert_close(good, alone, atol=1e-9, rtol=1e-9)
    try:
        bad = batched_logprobs(backend, [image] * 3, [text] * 3, answers, corrupt=left_pad_token_types)
    except (RuntimeError, ValueError, IndexError):
        return  # the model refused the misaligned batch outright: caught too
    assert (bad - alone).abs().max() > 1e-4


# -- sampling -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["qwen3-vl", "idefics2"])
def test_shared_prefix_sampling_draws_what_full_forwards_would(family, tiny_model_dir):
    """The answers sampled from one prefill with its cache expanded equal, token for token, those drawn with the
    same generator from one full (cache-free) forward of image + prompt + answer-so-far per step."""
    from fgvlm.models.sampling import draw, never_sampled_ids, sample_answers, stop_token_ids

    backend = float64_backend(tiny_model_dir, family)
    image = synth_flower_images(1)[0]
    text = backend.render_prompt(QUESTION)
    shared = sample_answers(backend, image, text, 4, 5, temperature=0.7, generator=torch.Generator().manual_seed(3))
    generator = torch.Generator().manual_seed(3)
    banned = torch.tensor(never_sampled_ids(backend))
    stops = stop_token_ids(backend)
    rows: list[list[int]] = [[] for _ in range(4)]
    with torch.no_grad():
        for _ in range(5):
            logits = torch.stack([alone_next_logits(backend, image, text, row) for row in rows])
            token = draw(logits, 0.7, 1.0, banned, generator).tolist()
            rows = [row if (row and row[-1] in stops) else row + [t] for row, t in zip(rows, token, strict=True)]
    assert shared.tokens == rows


def alone_next_logits(backend, image, text, answer):
    nested = [[image]] if backend.nested_images else [image]
    inputs = dict(backend.processor(images=nested, text=[text], return_tensors="pt"))
    if answer:
        inputs["input_ids"] = torch.cat([inputs["input_ids"], torch.tensor([answer])], dim=1)
        inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
        if "mm_token_type_ids" in inputs:
            extra = torch.zeros(1, len(answer), dtype=torch.long)
            inputs["mm_token_type_ids"] = torch.cat([inputs["mm_token_type_ids"], extra], 1)
    return backend.model(**backend.to_model(inputs), use_cache=False).logits[0, -1]


def test_banned_tokens_are_never_drawn_and_answers_end_at_the_first_stop(tiny_model_dir):
    from fgvlm.models.sampling import _cut_at_stops, draw, never_sampled_ids

    logits = torch.zeros(64, 10)
    logits[:, 3] = 50.0  # the placeholder would win every draw
    drawn = draw(logits, 1.0, 1.0, torch.tensor([3, 4]), torch.Generator().manual_seed(0))
    assert not bool(torch.isin(drawn, torch.tensor([3, 4])).any()) and len(set(drawn.tolist())) > 3
    logits = torch.tensor([[3.0, 2.0, 0.0, -9.0]] * 200)
    none = torch.tensor([], dtype=torch.long)
    # p = .705, .260, .035, ~0: top_p .7 keeps token 0 alone (it reaches .7); .9 keeps 0 and 1 (.965)
    assert set(draw(logits, 1.0, 0.7, none, torch.Generator().manual_seed(0)).tolist()) == {0}
    assert set(draw(logits, 1.0, 0.9, none, torch.Generator().manual_seed(0)).tolist()) == {0, 1}
    cut = _cut_at_stops([[5, 2, 7, 0], [5, 0, 2, 2], [5, 6, 7, 8]], {2, 0})
    assert cut.tokens == [[5, 2], [5, 0], [5, 6, 7, 8]] and cut.finished == [True, True, False]
    backend = float64_backend(tiny_model_dir, "qwen3-vl")
    vocab = backend.tokenizer.get_vocab()
    expected = {vocab[t] for t in ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")}
    assert set(never_sampled_ids(backend)) == expected


# -- the loss, by hand ------------------------------------------------------------------------------------------------
def test_group_advantages_and_policy_loss_by_hand():
    from fgvlm.sft.objectives.rl_model import group_advantages, policy_loss

    rewards = torch.tensor([[1.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    scaled = group_advantages(rewards, scale=True)  # std of (1, 0) = 0.7071 (unbiased)
    torch.testing.assert_close(scaled[0], torch.tensor([0.5, -0.5], dtype=torch.float64) / (0.5**0.5 + 1e-4))
    assert group_advantages(rewards, scale=False).tolist() == [[0.5, -0.5], [0.0, 0.0]]
    # answers 0 (2 tokens), 1 (1 token), 2 and 3 (1 token each); ratio 1 everywhere except token 1 (e^0.5 = 1.65)
    logp = torch.tensor([-1.0, -0.5, -2.0, -1.0, -1.0], dtype=torch.float64, requires_grad=True)
    old = torch.tensor([-1.0, -1.0, -2.0, -1.0, -1.0], dtype=torch.float64)
    rows = torch.tensor([0, 0, 1, 2, 3])
    adv = torch.tensor([1.0, -1.0, 0.0, 0.0], dtype=torch.float64)
    kept = torch.ones(4)
    grpo = RLOptions(loss="grpo", clip_low=0.2, clip_high=0.28)
    loss, stats = policy_loss(logp, old, adv, rows, kept, grpo)
    # answer 0: tokens -(1 * 1), -(1.28 * 1) (clipped) -> mean -1.14; answer 1: -(1 * -1) = 1; answers 2, 3: 0
    assert float(loss.detach()) == pytest.approx((-1.14 + 1.0) / 4) and stats["clip_fraction"] == pytest.approx(1 / 5)
    dapo, _ = policy_loss(logp, old, adv, rows, kept, RLOptions(loss="dapo"))
    assert float(dapo.detach()) == pytest.approx((-1 - 1.28 + 1) / 5)
    dr, _ = policy_loss(logp, old, adv, rows, kept, RLOptions(loss="dr-grpo", max_new_tokens=4))
    assert float(dr.detach()) == pytest.approx(((-1 - 1.28) / 4 + 1 / 4) / 4)
    skipped, _ = policy_loss(logp, old, adv, rows, torch.tensor([1, 1, 0, 0]), grpo)
    assert float(skipped.detach()) == pytest.approx((-1.14 + 1.0) / 2)
    with_kl, stats = policy_loss(logp, old, adv, rows, kept, RLOptions(kl=0.5), ref=old)
    k3 = torch.exp(old - logp) - (old - logp) - 1  # 0 except token 1: e^-0.5 + 0.5 - 1
    assert stats["kl"] == pytest.approx(float(k3.mean()))
    assert float(with_kl.detach()) == pytest.approx((-1.0 + (-1.28 + 0.5 * float(k3[1]))) / 2 / 4 + 1 / 4)


# -- rewards ----------------------------------------------------------------------------------------------------------
def test_match_and_lenient_rewards_read_the_answer_with_the_matcher(flowers_mini):
    from fgvlm.data import create_dataset
    from fgvlm.eval.scoring import TaskScorer
    from fgvlm.prompts.instructions import build_instructions

    data = create_dataset(dataset="flowers102", root=str(flowers_mini))
    scorer = TaskScorer("open-qa", data, None, {"object": "flower"}, 0)
    record = build_instructions(data, "train", {"open-qa": 1.0}, 0, limit=1)[0]
    prompt = scorer.prompt(record)
    phlox = data.prompt_names.index("garden phlox")

    def judged(text: str, finished: bool = True, target: int = phlox) -> Rollout:
        from fgvlm.models.chat import strip_reasoning

        answer = strip_reasoning(text)
        return Rollout(text, answer, target, *scorer.parse(answer, prompt), finished)

    assert match_reward(judged("garden phlox")) == lenient_reward(judged("garden phlox")) == 1.0
    assert match_reward(judged("Phlox paniculata")) == 0.0 and lenient_reward(judged("Phlox paniculata")) == 1.0
    assert match_reward(judged("garden phlox or a rose")) == 0.0  # ambiguous: two classes
    assert match_reward(judged("garden phlox", finished=False)) == 0.0  # cut off by max_new_tokens
    assert match_reward(judged("<think>pink panicles</think> garden phlox")) == 1.0
    assert format_ok("<think>pink panicles</think> garden phlox") and not format_ok("garden phlox")
    assert set(REWARDS) >= {"match", "lenient"}


def test_config_refusals_name_the_key():
    with pytest.raises(ConfigError, match="rl.reward"):
        RLOptions(reward="exact")
    with pytest.raises(ConfigError, match="rl.group_size"):
        RLOptions(group_size=1)
    with pytest.raises(ConfigError, match="rl.loss"):
        RLOptions(loss="ppo")
    with pytest.raises(ConfigError, match="adapters disabled"):
        from_dict(RLConfig, {"rl": {"kl": 0.1}})
    with pytest.raises(ConfigError, match="save_every"):
        from_dict(RLConfig, {"rl": {"updates_per_batch": 3}, "train": {"save_every": 10}})
    cfg = from_dict(RLConfig, {"rl": {"kl": 0.1}, "freeze": "vision,projector", "train": {"max_steps": 7}})
    assert cfg.objective == "rl" and cfg.method == "lora" and cfg.train.lr == 1e-5 and cfg.train.max_steps == 7
    assert RLOptions().answer_tokens == 32 and RLOptions(thinking="on").answer_tokens == 512
    for text, value in (("on", "on"), ("off", "off"), ('"on"', "on")):  # YAML reads a bare on / off as a boolean
        assert resolve_config(RLConfig, None, {}, [f"rl.thinking={text}"]).rl.thinking == value


# -- the mechanism: a reward for one fixed answer makes it likelier ----------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("family", RL_FAMILIES)
def test_a_reward_for_one_fixed_answer_makes_it_several_times_likelier(family, tiny_model_dir):
    """GRPO (G = 8, 4 images, no KL) rewarding answers that open with one fixed token, the random model's 2nd
    likeliest first token, sampled at temperature 0.1 (a random model's logits are nearly flat: at temperature 1
    every token has ~1/V and a group almost never finds the rewarded one): after 25 steps the exact expected reward
    (that token's probability at the sampling temperature, mean over the images) is at least 3x what it was."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from fgvlm.prompts.instructions import InstructionRecord
    from fgvlm.sft.objectives.rl_model import RLModel

    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir(family))
    backend = backend_class(family)(model, AutoProcessor.from_pretrained(tiny_model_dir(family)), {"family": family})
    images = synth_flower_images(4)
    text = backend.render_prompt(QUESTION)
    records = [InstructionRecord(id=f"x{i}", image=im, question=QUESTION, answer="-", task="open-qa", label=0)
               for i, im in enumerate(images)]  # fmt: skip

    def first_token_probs() -> torch.Tensor:
        with torch.no_grad():
            return torch.stack(
                [torch.softmax(alone_next_logits(backend, im, text, []).float() / 0.1, -1) for im in images]
            )

    target = int(first_token_probs().mean(0).argsort(descending=True)[1])

    def judge(record, prompt, tokens, finished):
        return Rollout("", "", 1, None, None, finished), float(tokens[0] == target)

    rl = RLModel(model, backend, RLOptions(group_size=8, max_new_tokens=1, temperature=0.1), judge, 0, None)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    before = float(first_token_probs()[:, target].mean())
    model.train()
    for step in range(25):
        rl.step = step
        loss = rl(records, images, [None] * 4, [text] * 4)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    after = float(first_token_probs()[:, target].mean())
    assert after >= 3 * before, (before, after, rl.drain_metrics())


# -- the run end to end ---------------------------------------------------------------------------------------------
def rl_args(**extra: str) -> dict:
    data = {"dataset": "synthflowers", "options": {"num_classes": 4, "images_per_class": [2, 1, 1]}}
    return {
        "model": {"name": "tiny-qwen3-vl"},
        "data": data,
        "rl": {"group_size": 4, "max_new_tokens": 4, "reward": "vowel", "log_rollouts_every": 2, **extra},
        "train": {"max_steps": 4, "lr": 1e-3, "eval_every": 2, "save_every": 2, "log_every": 1},
        "report_to": "none",
    }


@pytest.fixture
def vowel(monkeypatch):
    monkeypatch.setitem(REWARDS, "vowel", "test_sft_rl:vowel_reward")


def test_rl_run_writes_the_contract_files_and_resumes_exactly(use_tiny_cache, vowel, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from fgvlm.sft.run import run_sft

    whole = run_sft(from_dict(RLConfig, rl_args()), tmp_path / "whole")
    run = tmp_path / "whole"
    for name in ("config.yaml", "meta.json", "train_log.jsonl", "metrics.json", "rollouts.jsonl", "done.json"):
        assert (run / name).is_file(), name
    assert whole["objective"] == "rl" and whole["rl"]["group_size"] == 4 and whole["n"] == 4
    assert 0 <= whole["generate_accuracy"] <= 1 and (run / "eval-test-generate" / "metrics.json").is_file()
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    assert all(
        {"reward_mean", "zero_variance_groups", "answer_length", "entropy", "clip_fraction"} <= set(r) for r in log
    )
    assert any(r["reward_mean"] > 0 for r in log) and "val_gen_accuracy" in log[1]
    rollouts = [json.loads(line) for line in (run / "rollouts.jsonl").read_text().splitlines()]
    assert sorted({r["step"] for r in rollouts}) == [1, 2, 4] and len(rollouts) == 3 * 4  # 1 image x G = 4 a step
    assert all(r["reward"] == vowel_reward(Rollout(r["text"], "", 0, None, None, True)) for r in rollouts)

    run_killed_at_step(monkeypatch, 3, lambda: run_sft(from_dict(RLConfig, rl_args()), tmp_path / "resumed"))
    resumed = steps_run(monkeypatch, lambda: run_sft(from_dict(RLConfig, rl_args()), tmp_path / "resumed"))
    assert resumed == [3, 4]  # from checkpoint-2
    a = load_file(str(run / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "model" / "model.safetensors"))
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6
    assert (tmp_path / "resumed" / "rollouts.jsonl").read_text() == (run / "rollouts.jsonl").read_text()
    base = load_file(str(tmp_path / "resumed" / "checkpoints" / "checkpoint-2" / "trainable.safetensors"))
    assert base  # the LoRA adapters and projector were checkpointed


@pytest.mark.slow
def test_fgvlm_rl_ddp_two_processes_match_one(tiny_model_dir, tiny_cache, tmp_path):
    """``torchrun --nproc_per_node 2`` with 1 image per process against 1 process with 2 accumulation steps: the
    same images per step and the same rollouts (sampling is seeded per step and image), so the same curve. LoRA
    dropout is off: its masks come from the global generator, which two processes draw in parallel and one in turn
    (a difference of the dropout noise, not of the method)."""
    import os

    env = {**os.environ, "FGVLM_CACHE": str(tiny_cache), "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}
    tiny_model_dir("qwen3-vl")
    args = ["--model", "tiny-qwen3-vl", "--dataset", "synthflowers", "--limit", "8", "--max-steps", "3", "--lr",
            "1e-3", "-g", "4", "--set", "rl.max_new_tokens=4", "--set", "rl.reward=vowel", "--set", "report_to=none",
            "--set", "train.eval_every=3", "--set", "eval_limit=2", "--set", "train.eval_limit=2",
            "--set", "lora.dropout=0"]  # fmt: skip
    script = str(Path(__file__).resolve())
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    logs = []
    for name, command in (
        ("ddp", [torchrun, "--standalone", "--nproc_per_node", "2", script]),
        ("one", [sys.executable, script, "--set", "train.grad_accum=2"]),
    ):
        out = tmp_path / name
        proc = subprocess.run([*command, *args, "-o", str(out)], capture_output=True, text=True, env=env, cwd=REPO)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert (out / "done.json").is_file()
        logs.append([json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()])
    two, one = logs
    assert [r["step"] for r in two] == [r["step"] for r in one] == [1, 2, 3]
    assert [r["train_loss"] for r in two] == pytest.approx([r["train_loss"] for r in one], rel=1e-4, abs=1e-7)
    assert [r["grad_norm"] for r in two] == pytest.approx([r["grad_norm"] for r in one], rel=1e-4, abs=1e-7)
    assert any(r["grad_norm"] > 0 for r in one)


if __name__ == "__main__":  # `fgvlm rl` with the test reward registered (the multi-process test runs this)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    REWARDS["vowel"] = "test_sft_rl:vowel_reward"
    from fgvlm.cli import main

    main(["rl", *sys.argv[1:]])
