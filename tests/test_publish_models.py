"""``fgvlm publish --dry-run`` of real tiny runs: a LoRA SFT run (with the adapter alone), a head run and a CNN run.
The staged folder loads back through transformers / peft / timm / fgvlm predict and predicts exactly as the run's
model; the card parses with huggingface_hub and its model-index holds the run's numbers."""

from __future__ import annotations

import ast
import json

import pytest
import torch
from publish_fixtures import card_metadata, check_card_numbers, publish

from fgvlm.config import from_dict

SMALL_DATA = {"dataset": "synthflowers", "options": {"num_classes": 4, "images_per_class": [2, 1, 1]}}


@pytest.fixture(scope="module")
def sft_published(tmp_path_factory, tiny_cache):
    """A 2-step LoRA fine-tuning of the tiny Qwen3-VL, published (dry run) with its adapter and a licence."""
    from fgvlm.sft.config import SFTConfig
    from fgvlm.sft.run import run_sft

    root = tmp_path_factory.mktemp("publish-sft")
    cfg = from_dict(
        SFTConfig,
        {
            "model": {"name": "tiny-qwen3-vl"},
            "data": SMALL_DATA,
            "method": "lora",
            "train": {"max_steps": 2, "lr": 1e-3, "eval_every": 1, "save_every": 2, "log_every": 1, "num_threads": 1},
            "report_to": "none",
        },
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FGVLM_CACHE", str(tiny_cache))
        run_sft(cfg, root / "run")
        argv = [root / "run", "--repo-id", "my-org/tiny-qwen3-vl-synth", "--adapter", "--license", "apache-2.0"]
        assert publish(*argv, "--dry-run", "--out", root / "pub") == 0
    return root / "run", root / "pub" / "upload"


def run_card_snippet(readme, replace: tuple[str, str], image, workdir, monkeypatch) -> None:
    """Run the card's "How to use" Python block as a user would, on the staged folder instead of the Hub."""
    code = readme.read_text().split("```python\n", 1)[1].split("```", 1)[0]
    assert replace[0] in code
    image.save(workdir / "flower.jpg")
    monkeypatch.chdir(workdir)
    exec(compile(code.replace(*replace), str(readme), "exec"), {})


def logits(model_dir, image, text="What is the name of the flower in this image? Answer with the name only."):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(model_dir)
    model = AutoModelForImageTextToText.from_pretrained(model_dir).eval()
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(text=[prompt], images=[image], return_tensors="pt")
    with torch.no_grad():
        return model(**inputs).logits


def test_sft_folder_loads_with_transformers_and_predicts_like_the_run(sft_published, use_tiny_cache, tmp_path):
    from fgvlm.data import create_dataset
    from fgvlm.eval.zeroshot import EvalConfig, evaluate
    from fgvlm.models.base import ModelConfig

    run, folder = sft_published
    assert {"model.safetensors", "config.json", "chat_template.jinja", "tokenizer.json", "README.md"} <= {
        p.name for p in folder.iterdir()
    }
    assert not list(folder.rglob("*.bin")) and not (run / "model" / "README.md").exists()  # the run is untouched
    image = create_dataset(**SMALL_DATA).split("test")[0].image
    assert torch.equal(logits(folder, image), logits(run / "model", image))
    predictions = {}
    for name, model in (("published", folder), ("run", run / "model")):
        cfg = from_dict(EvalConfig, {"data": SMALL_DATA, "mode": "rank"})
        cfg.model = ModelConfig(name=str(model))
        evaluate(cfg, tmp_path / name)
        predictions[name] = [json.loads(x) for x in (tmp_path / name / "predictions.jsonl").read_text().splitlines()]
    assert [(p["id"], p["pred"], p["topk"]) for p in predictions["published"]] == [
        (p["id"], p["pred"], p["topk"]) for p in predictions["run"]
    ]
    for name in ("config.yaml", "metrics.json", "train_log.jsonl"):
        assert (folder / "fgvlm" / name).read_bytes() == (run / name).read_bytes()
    assert (folder / "fgvlm" / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_lora_adapter_alone_rebuilds_the_merged_model(sft_published, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    from fgvlm.data import create_dataset

    run, folder = sft_published
    config = json.loads((folder / "adapter" / "adapter_config.json").read_text())
    assert config["r"] == 16 and config["lora_alpha"] == 32 and config["peft_type"] == "LORA"
    assert all(".layers." in name and "visual" not in name for name in config["target_modules"])  # language only
    assert config["modules_to_save"] and all(m.startswith("model.visual") for m in config["modules_to_save"])
    base = AutoModelForImageTextToText.from_pretrained(tiny_model_dir("qwen3-vl"))
    merged = PeftModel.from_pretrained(base, folder / "adapter").merge_and_unload().eval()
    expected = AutoModelForImageTextToText.from_pretrained(run / "model").state_dict()
    for name, tensor in merged.state_dict().items():
        assert torch.allclose(tensor, expected[name], atol=1e-6), name
    image = create_dataset(**SMALL_DATA).split("test")[1].image
    assert torch.allclose(logits(run / "model", image), logits(folder, image))


def test_sft_card_carries_the_results_recipe_and_reproduction(sft_published, tmp_path, monkeypatch, capsys):
    from fgvlm.data import create_dataset

    run, folder = sft_published
    image = create_dataset(**SMALL_DATA).split("test")[0].image
    run_card_snippet(
        folder / "README.md", ('"my-org/tiny-qwen3-vl-synth"', repr(str(folder))), image, tmp_path, monkeypatch
    )
    assert capsys.readouterr().out.strip()  # the model's answer, decoded
    check_card_numbers(folder / "README.md", run / "metrics.json")
    meta = card_metadata(folder / "README.md")
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "image-text-to-text"
    assert meta["license"] == "apache-2.0" and meta["datasets"] == ["synthflowers"]
    assert "base_model" not in meta  # a tiny local model is on no Hub
    assert {"fgvlm", "lora", "peft", "sft"} <= set(meta["tags"])
    text = (folder / "README.md").read_text()
    done = json.loads((run / "done.json").read_text())
    assert "fgvlm sft --config tiny-qwen3-vl-synth/fgvlm/config.yaml --out runs/tiny-qwen3-vl-synth" in text
    assert "- LoRA rank: `16`" in text and "![Training curves](fgvlm/training_curves.png)" in text
    assert 'AutoModelForImageTextToText.from_pretrained("my-org/tiny-qwen3-vl-synth")' in text
    record = json.loads((folder.parent / "publish.json").read_text())
    assert record["state"] == "dry-run" and record["commit"] is None and (folder.parent / "done.json").is_file()
    assert done["config_hash"] in record["commit_message"]
    assert {f["path"] for f in record["files"]} == {
        p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()
    }


# -- a head run ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def head_run(tmp_path_factory, tiny_model_dir):
    from fgvlm.config import resolve_config
    from fgvlm.heads.config import HeadTrainConfig
    from fgvlm.heads.pipeline import train_run

    root = tmp_path_factory.mktemp("publish-head")
    overrides = [f"model.name={tiny_model_dir('qwen3-vl')}", "data.dataset=synthflowers", f"cache_dir={root / 'c'}",
                 "data.options={num_classes: 4, images_per_class: [6, 3, 3], image_size: 32}", "steps=20",
                 "batch_size=4", "eval_every=10", "lr=1e-2"]  # fmt: skip
    train_run(resolve_config(HeadTrainConfig, overrides=overrides), root / "run", progress=False)
    return root / "run"


def test_head_is_published_with_a_pointer_to_its_base_model(head_run, tmp_path, capsys):
    from fgvlm.data import create_dataset
    from fgvlm.heads.predict import head_probabilities
    from fgvlm.models.base import ModelConfig
    from fgvlm.models.loading import load_backend

    argv = [head_run, "--repo-id", "my-org/tiny-probe", "--base-model", "my-org/tiny-qwen3-vl-synth"]
    assert publish(*argv, "--dry-run", "--out", tmp_path / "pub") == 0
    printed = capsys.readouterr()
    assert "head.safetensors" in printed.out and "dry run: 8 files" in printed.out
    folder = tmp_path / "pub" / "upload"
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "fgvlm", "head.json", "head.safetensors"]
    info = json.loads((folder / "head.json").read_text())
    backend = load_backend(ModelConfig(name=info["model_config"]["name"]))
    dataset = create_dataset(dataset="synthflowers", options=info["dataset"]["options"])
    images = [sample.image for sample in dataset.split("test")]
    published, _ = head_probabilities(backend, images, folder)
    original, _ = head_probabilities(backend, images, head_run)
    assert torch.equal(published, original)
    predictions = [json.loads(x) for x in (head_run / "predictions.jsonl").read_text().splitlines()]
    assert published.argmax(1).tolist() == [p["pred"] for p in predictions]
    check_card_numbers(folder / "README.md", head_run / "metrics.json")
    meta = card_metadata(folder / "README.md")
    assert meta["base_model"] == "my-org/tiny-qwen3-vl-synth" and meta["pipeline_tag"] == "image-classification"
    assert (
        "fgvlm predict --model my-org/tiny-qwen3-vl-synth --head tiny-probe flower.jpg"
        in (folder / "README.md").read_text()
    )


# -- a CNN run ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory):
    from fgvlm.train.cnn import CNNTrainConfig, train_cnn

    out = tmp_path_factory.mktemp("publish-cnn") / "run"
    cfg = from_dict(
        CNNTrainConfig,
        {
            "data": {"dataset": "synthflowers", "options": {"num_classes": 4, "image_size": 32}},
            "arch": "test_resnet",
            "image_size": 32,
            "epochs": 1,
            "batch_size": 8,
            "num_workers": 0,
            "num_threads": 1,
            "image_cache": False,
            "progress": False,
            "limit": 16,
        },
    )
    train_cnn(cfg, out)
    return out


def test_cnn_is_published_in_timm_layout_and_predicts_like_its_checkpoint(cnn_run, tmp_path, monkeypatch, capsys):
    import timm
    from timm.data import create_transform, resolve_data_config

    from fgvlm.data import create_dataset
    from fgvlm.train.checkpoint import load_weights
    from fgvlm.train.classifier import create_classifier

    assert publish(cnn_run, "--repo-id", "my-org/tiny-cnn", "--license", "mit", "--dry-run", "-o", tmp_path / "p") == 0
    folder = tmp_path / "p" / "upload"
    model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    metrics = json.loads((cnn_run / "metrics.json").read_text())
    dataset = create_dataset(dataset="synthflowers", options={"num_classes": 4, "image_size": 32})
    assert model.pretrained_cfg["label_names"] == dataset.class_names
    original, _ = create_classifier("test_resnet", 4, False)
    load_weights(cnn_run / "checkpoints" / f"{metrics['checkpoint']}.safetensors", original)
    transform = create_transform(**resolve_data_config({}, model=model))
    batch = torch.stack([transform(sample.image) for sample in dataset.split("test")[:16]])
    with torch.no_grad():
        published, expected = model(batch), original.eval()(batch)
    assert torch.equal(published, expected)
    predictions = [json.loads(x) for x in (cnn_run / "predictions.jsonl").read_text().splitlines()]
    assert published.argmax(1).tolist() == [p["pred"] for p in predictions]
    check_card_numbers(folder / "README.md", cnn_run / "metrics.json")
    capsys.readouterr()
    hub_to_local = ("hf-hub:my-org/tiny-cnn", f"local-dir:{folder}")
    run_card_snippet(folder / "README.md", hub_to_local, dataset.split("test")[0].image, tmp_path, monkeypatch)
    shown = ast.literal_eval(capsys.readouterr().out)  # the snippet prints [(class name, probability), ...]
    assert [name for name, _ in shown][0] == dataset.class_names[predictions[0]["pred"]] and len(shown) == 4
    meta = card_metadata(folder / "README.md")
    assert meta["library_name"] == "timm" and meta["license"] == "mit" and "base_model" not in meta
    assert "fgvlm cnn train --config tiny-cnn/fgvlm/config.yaml" in (folder / "README.md").read_text()


def test_unfinished_runs_and_wrong_repository_types_are_refused(cnn_run, tmp_path, capsys):
    import shutil

    partial = tmp_path / "partial"
    shutil.copytree(cnn_run, partial)
    (partial / "done.json").unlink()
    assert publish(partial, "--repo-id", "my-org/x", "--dry-run", "-o", tmp_path / "a") == 2
    assert "the run has not finished (no done.json)" in capsys.readouterr().err
    assert publish(cnn_run, "--repo-id", "my-org/x", "--dataset", "--dry-run", "-o", tmp_path / "b") == 2
    assert "--dataset is for `fgvlm prompts build` output" in capsys.readouterr().err
    assert publish(cnn_run, "--repo-id", "not a repo", "--dry-run", "-o", tmp_path / "c") == 2
    assert "repo_id must be ORG/NAME" in capsys.readouterr().err
    assert publish(tmp_path, "--repo-id", "my-org/x", "--dry-run", "-o", tmp_path / "d") == 2
    assert "nothing fgvlm publishes" in capsys.readouterr().err
    assert publish(cnn_run, "--repo-id", "my-org/x", "--set", "token=hf_secret", "-o", tmp_path / "e") == 2
    assert "unknown key(s) 'token'" in capsys.readouterr().err  # a token never comes from a config
    assert not any((tmp_path / name).exists() for name in "abcde")


# -- small pieces, hand-checked ------------------------------------------------------------------------------------
def test_adapter_state_uses_peft_saved_names():
    from fgvlm.publish.adapter import adapter_state
    from fgvlm.publish.sources import PublishError

    a, b, w, h = (torch.full((2, 2), float(i)) for i in range(4))
    trained = {
        "vlm.base_model.model.model.language_model.layers.0.self_attn.q_proj.lora_A.default.weight": a,
        "vlm.base_model.model.model.language_model.layers.0.self_attn.q_proj.lora_B.default.weight": b,
        "vlm.base_model.model.model.visual.merger.linear_fc1.weight": w,
        "head.net.1.weight": h,  # a classify head: published as head.safetensors, not in the adapter
    }
    state, adapted, saved = adapter_state(trained)
    assert adapted == ["model.language_model.layers.0.self_attn.q_proj"]
    assert saved == ["model.visual.merger.linear_fc1"]
    assert state == {
        "base_model.model.model.language_model.layers.0.self_attn.q_proj.lora_A.weight": a,
        "base_model.model.model.language_model.layers.0.self_attn.q_proj.lora_B.weight": b,
        "base_model.model.model.visual.merger.linear_fc1.weight": w,
    }
    with pytest.raises(PublishError, match="no LoRA tensors"):
        adapter_state({"base_model.model.model.visual.merger.linear_fc1.weight": w})


def test_base_model_ids_and_inherited_licence(tmp_path):
    from fgvlm.publish.card import hub_model_id, inherited_license
    from fgvlm.publish.staging import human_size

    assert hub_model_id("qwen3-vl-4b") == "Qwen/Qwen3-VL-4B-Instruct"  # a registry preset's hub id
    assert hub_model_id("my-org/flowers-sft") == "my-org/flowers-sft"
    assert hub_model_id("tiny-qwen3-vl") is None and hub_model_id(str(tmp_path)) is None
    (tmp_path / "README.md").write_text("---\nlicense: apache-2.0\ntags: [x]\n---\n# a base model\n")
    assert inherited_license(None, str(tmp_path)) == "apache-2.0"
    assert inherited_license("my-org/not-cached") is None  # offline and not in the hub cache: unknown
    assert [human_size(n) for n in (999, 1536, 5 * 2**30)] == ["999 B", "1.5 KiB", "5.0 GiB"]


def test_the_cost_block_is_shown_when_the_run_has_one(cnn_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(cnn_run, run)
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["cost"] = {  # the agreed schema (fgvlm.runs writes it); every key optional
        "wall_seconds": 4321.0,
        "images": 6149,
        "images_per_second": 49.8,
        "peak_memory": {"rss_bytes": 3 * 2**30, "cuda_max_allocated_bytes": [40 * 2**30]},
        "device_type": "cuda",
        "devices": ["NVIDIA H200"],
        "device_count": 1,
        "device_hours": 1.2003,
        "flops": 1.2e15,
        "flops_rule": "6·N·T train",
    }
    (run / "metrics.json").write_text(json.dumps(metrics))
    assert publish(run, "--repo-id", "my-org/cnn", "--license", "mit", "--dry-run", "-o", tmp_path / "p") == 0
    text = (tmp_path / "p" / "upload" / "README.md").read_text()
    assert "- Hardware: NVIDIA H200 (cuda)" in text
    assert "- Wall time: 4,321 s (1.2 device-hours on 1 device(s))" in text
    assert "- Images: 6,149 (49.8 images/s)" in text and "- Peak memory: 3.0 GiB RSS, GPU 40.0 GiB" in text
    assert "- FLOPs: 1.2e+15 (6·N·T train)" in text


def test_adapter_is_refused_when_it_would_not_rebuild_the_model(sft_published, use_tiny_cache, tmp_path, capsys):
    import shutil

    from safetensors.torch import load_file, save_file

    run, _ = sft_published
    full = tmp_path / "full"
    shutil.copytree(run, full)
    (full / "config.yaml").write_text((full / "config.yaml").read_text().replace("method: lora", "method: full"))
    assert publish(full, "--repo-id", "my-org/x", "--adapter", "--dry-run", "-o", tmp_path / "a") == 2
    assert "--adapter needs a LoRA run (method: full)" in capsys.readouterr().err
    stale = tmp_path / "stale"
    shutil.copytree(run, stale)
    weights = sorted(stale.glob("checkpoints/checkpoint-*/trainable.safetensors"))[-1]
    tensors = load_file(str(weights))
    tensors = {name: t * 3 if ".lora_B." in name else t for name, t in tensors.items()}  # not what RUN/model holds
    save_file(tensors, str(weights))
    assert publish(stale, "--repo-id", "my-org/x", "--adapter", "--dry-run", "-o", tmp_path / "b") == 2
    assert "base + adapter does not rebuild" in capsys.readouterr().err
    assert not (tmp_path / "b" / "done.json").exists() and not (tmp_path / "b" / "upload").exists()


def test_cnn_base_model_and_license_flags_win_over_the_runs_hub_weights(cnn_run, tmp_path):
    """The rule every kind follows (``RunSource.base_and_license``): ``--base-model`` and ``--license`` win; without
    them a run started from Hub weights names those weights."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(cnn_run, run)
    meta = json.loads((run / "meta.json").read_text())
    meta["model"] = {**(meta.get("model") or {}), "hub_id": "timm/resnet50.a1_in1k"}
    (run / "meta.json").write_text(json.dumps(meta))
    argv = [run, "--repo-id", "my-org/cnn", "--dry-run", "--license", "mit"]
    assert publish(*argv, "-o", tmp_path / "own") == 0
    assert card_metadata(tmp_path / "own" / "upload" / "README.md")["base_model"] == "timm/resnet50.a1_in1k"
    assert publish(*argv, "--base-model", "my-org/resnet50-ft", "--license", "apache-2.0", "-o", tmp_path / "flag") == 0
    meta = card_metadata(tmp_path / "flag" / "upload" / "README.md")
    assert meta["base_model"] == "my-org/resnet50-ft" and meta["license"] == "apache-2.0"
