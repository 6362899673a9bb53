"""`fgvlm predict` on real Flowers102 images: with a head trained on the mini train split, and zero-shot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import typer
from typer.testing import CliRunner

from fgvlm.commands.predict import command
from fgvlm.config import ConfigError, resolve_config
from fgvlm.heads.config import HeadTrainConfig

cli = typer.Typer()
cli.command()(command)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: on a shared 2-core box, two threads spin-wait and tiny-model forwards get ~10x slower."""
    from fgvlm.train.runtime import torch_threads

    with torch_threads(1):
        yield


def predict(*argv: str) -> list[dict]:
    result = CliRunner().invoke(cli, [*argv, "--json"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return [json.loads(line) for line in result.stdout.strip().splitlines()]


@pytest.fixture(scope="module")
def mini_head(tmp_path_factory, flowers_mini, tiny_model_dir):  # noqa: F811 (the imported fixture)
    """A head on the tiny Qwen3-VL's features of the 408 mini train images (evaluated on train: no more extraction)."""
    from fgvlm.heads.pipeline import train_run
    from fgvlm.models.base import ModelConfig
    from fgvlm.models.loading import load_backend

    model = str(tiny_model_dir("qwen3-vl"))
    backend = load_backend(ModelConfig(name=model))
    out = tmp_path_factory.mktemp("head")
    overrides = [f"model.name={model}", "data.dataset=flowers102", f"data.root={flowers_mini}", "val_split=null",
                 "eval_split=train", "steps=300", "lr=1e-2", "standardize=true", "embed_batch_size=24",
                 f"cache_dir={out / 'cache'}"]  # fmt: skip
    metrics = train_run(
        resolve_config(HeadTrainConfig, overrides=overrides), out / "run", progress=False, backend=backend
    )
    return model, backend, out / "run", metrics


def test_predict_with_a_head_on_a_real_flowers_image(mini_head, flowers_mini):
    model, _, run, metrics = mini_head
    assert metrics["n"] == 408 and metrics["split"] == "train"
    assert metrics["accuracy"] > 5 / 102  # fits its own training images far above chance (1/102)
    lines = {json.loads(x)["id"]: json.loads(x) for x in (run / "predictions.jsonl").read_text().splitlines()}
    image_id = sorted(lines)[0]
    image = flowers_mini / "jpg" / f"image_{image_id}.jpg"
    assert image.is_file()
    [result] = predict(str(image), "--model", model, "--head", str(run))
    names = json.loads((run / "head.json").read_text())["prompt_names"]
    assert result["image"] == str(image) and result["method"] == f"head:{run}"
    assert len(result["top"]) == 5 and all(name in names for name, _ in result["top"])
    probs = [p for _, p in result["top"]]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    # the same image through predict and through the training run's evaluation: same top-5 and probabilities
    expected = lines[image_id]["topk"]
    assert [names.index(n) for n, _ in result["top"]] == [c for c, _ in expected]
    assert all(abs(p - q) < 1e-4 for p, (_, q) in zip(probs, expected, strict=True))
    # --model defaults to the head's own backbone
    assert predict(str(image), "--head", str(run))[0]["top"] == result["top"]


def test_zero_shot_predict_ranks_flowers102_names(mini_head, flowers_mini):
    from fgvlm.data import create_dataset
    from fgvlm.heads.predict import zero_shot_prompt

    model, backend, _, _ = mini_head
    images = sorted((flowers_mini / "jpg").glob("image_*.jpg"))[:2]
    results = predict(*map(str, images), "--model", model)
    names = create_dataset(dataset="flowers102").prompt_names
    assert [r["image"] for r in results] == list(map(str, images)) and results[0]["method"] == "zero-shot"
    # by hand: softmax over the per-token mean log-likelihoods of all 102 names
    from fgvlm.heads.predict import load_images

    prompt = zero_shot_prompt("flowers102", backend.family)
    scores = backend.rank(load_images(images[:1]), prompt, names).mean[0]
    probs = torch.softmax(scores, dim=0)
    top = torch.argsort(probs, descending=True, stable=True)[:5].tolist()
    assert [n for n, _ in results[0]["top"]] == [names[i] for i in top]
    assert all(abs(p - probs[i].item()) < 1e-4 for (_, p), i in zip(results[0]["top"], top, strict=True))


def test_predict_refuses_another_backbone_and_names_missing_files(mini_head, tmp_path):
    _, _, run, _ = mini_head
    result = CliRunner().invoke(cli, [str(tmp_path / "none.jpg"), "--model", "dummy"])
    assert result.exit_code != 0 and "none.jpg" in str(result.exception)
    image = next(Path(run).parent.glob("*")).with_name("x.png")
    from PIL import Image

    Image.new("RGB", (32, 32), (200, 30, 60)).save(image)
    result = CliRunner().invoke(cli, [str(image), "--model", "dummy", "--head", str(run)])
    assert isinstance(result.exception, ConfigError) and "trained on backbone" in str(result.exception)


@pytest.fixture(scope="module")
def dummy_head(tmp_path_factory):
    """A head on the DummyBackend's features of synthflowers, trained with a non-default max_pixels."""
    from fgvlm.heads.pipeline import train_run

    out = tmp_path_factory.mktemp("dummy-head")
    overrides = ["model.name=dummy", "model.max_pixels=50176", "data.dataset=synthflowers", "steps=20",
                 "data.options={num_classes: 4, images_per_class: [6, 3, 3], image_size: 32}",
                 f"cache_dir={out / 'cache'}"]  # fmt: skip
    train_run(resolve_config(HeadTrainConfig, overrides=overrides), out / "run", progress=False)
    return out / "run"


def test_head_refuses_other_pixel_bounds(dummy_head):
    """Same weights, other max_pixels: the features differ, so the head is refused (naming the setting)."""
    from fgvlm.heads.model import load_head
    from fgvlm.heads.pipeline import check_backbone
    from fgvlm.models.base import ModelConfig
    from fgvlm.models.dummy import DummyBackend

    _, info = load_head(dummy_head)
    check_backbone(DummyBackend(), ModelConfig(name="dummy", max_pixels=50176), info)  # the same settings pass
    with pytest.raises(ConfigError, match=r"max_pixels: 50176 -> 100352"):
        check_backbone(DummyBackend(), ModelConfig(name="dummy", max_pixels=100352), info)


def test_predict_with_model_and_head_keeps_the_heads_model_settings(dummy_head, tmp_path, monkeypatch):
    """--model replaces only the name: the head's recorded max_pixels reaches the backend."""
    from PIL import Image

    import fgvlm.models.loading as loading

    loaded = []
    real = loading.create_backend

    def recording(cfg, *args, **kwargs):
        loaded.append(cfg)
        return real(cfg, *args, **kwargs)

    monkeypatch.setattr(loading, "create_backend", recording)
    image = tmp_path / "x.png"
    Image.new("RGB", (32, 32), (200, 30, 60)).save(image)
    [result] = predict(str(image), "--model", "dummy", "--head", str(dummy_head))
    assert [(cfg.name, cfg.max_pixels) for cfg in loaded] == [("dummy", 50176)]
    assert result["method"] == f"head:{dummy_head}" and len(result["top"]) == 4


def test_zero_shot_without_class_names_is_a_user_error(tmp_path):
    """A user mistake is the project's ConfigError (the CLI prints it as one line), not a bare ValueError."""
    from PIL import Image

    from fgvlm.heads.predict import predict_images
    from fgvlm.models.dummy import DummyBackend

    image = tmp_path / "x.png"
    Image.new("RGB", (16, 16), (10, 200, 30)).save(image)
    with pytest.raises(ConfigError, match="needs class names"):
        predict_images(DummyBackend(), [image], class_names=[])
