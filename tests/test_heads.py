"""Heads on frozen VLM features: the feature cache, the head and its training, the sweep, `fgvlm head train|eval`.

Fast parts run on tensors and on the deterministic DummyBackend; the tiny random Qwen3-VL checks the real thing:
cached == online training, 2-process extraction == 1-process, and a head on real Flowers102 images.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from fgvlm.commands.head import app
from fgvlm.config import ConfigError, from_dict, load_yaml, resolve_config
from fgvlm.heads.cache import FeatureCache, feature_key
from fgvlm.heads.config import HeadRecipe, HeadTrainConfig, SweepConfig
from fgvlm.heads.sweep import holdout_indices, run_sweep
from fgvlm.heads.training import TensorFeatures, batch_order, train_head
from fgvlm.runs import TRAIN_LOG_KEYS

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: on a shared 2-core box, two threads spin-wait and tiny-model forwards get ~10x slower."""
    from fgvlm.train.runtime import torch_threads

    with torch_threads(1):
        yield


SYNTH = ["--set", "data.options={num_classes: 4, images_per_class: [6, 3, 3], image_size: 32}"]


def clusters(n: int, dim: int, classes: int, seed: int, spread: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian blobs around fixed class centres: linearly separable up to ``spread``."""
    centres = torch.randn(classes, dim, generator=torch.Generator().manual_seed(123)) * 3
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    return centres[labels] + spread * torch.randn(n, dim, generator=generator), labels


def nn_loss(head, x, y) -> float:
    with torch.no_grad():
        return torch.nn.functional.cross_entropy(head.eval()(x), y).item()


def run_head(*argv: str) -> dict:
    result = CliRunner().invoke(app, [*argv, "--json"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return json.loads(result.stdout.strip().splitlines()[-1])


# -- cache ---------------------------------------------------------------------------------------------------------
def test_feature_key_changes_with_every_ingredient():
    base = {"backbone": {"model": "sha256:aa"}, "data": {"ids": "x"}, "prompt": "p", "pooling": "mean", "layer": -1}
    keys = {feature_key(base)}
    for change in ({"pooling": "last"}, {"layer": -2}, {"prompt": "q"}, {"data": {"ids": "y"}}):
        keys.add(feature_key({**base, **change}))
    keys.add(feature_key({**base, "backbone": {"model": "sha256:bb"}}))
    assert len(keys) == 6
    assert feature_key(dict(reversed(list(base.items())))) == feature_key(base)  # order-free


def test_feature_cache_key_includes_the_data_source(tmp_path):
    """Two image folders with the same file names but different pixels must not share cache entries."""
    from PIL import Image

    from fgvlm.data import create_dataset
    from fgvlm.heads.features import FeatureSpec, split_features
    from fgvlm.models.dummy import DummyBackend

    for root, shade in (("red", (200, 20, 20)), ("blue", (20, 20, 200))):
        for cls in ("daisy", "rose"):
            folder = tmp_path / root / "train" / cls
            folder.mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (16, 16), tuple(c + 10 * i for c in shade)).save(folder / f"img_{i}.png")
    backend, spec, cache = DummyBackend(), FeatureSpec("What flower is this?"), FeatureCache(tmp_path / "cache")

    def features(root: str):
        split = create_dataset(dataset="imagefolder", root=str(tmp_path / root)).split("train")
        return split_features(backend, split, spec, cache, progress=False)

    red, red_hit = features("red")
    blue, blue_hit = features("blue")
    assert red.ids == blue.ids and not red_hit and not blue_hit  # same ids, yet a second extraction
    assert red.meta["key"] != blue.meta["key"] and not torch.equal(red.features, blue.features)
    again, hit = features("red")
    assert hit and torch.equal(again.features, red.features)


def test_cache_entry_is_atomic_and_half_written_entries_are_ignored(tmp_path):
    cache = FeatureCache(tmp_path)
    features, labels = torch.randn(5, 3), torch.arange(5)
    assert cache.load("k1") is None
    # a killed writer leaves features without meta.json (and a temp folder): neither reads as complete
    half = cache.entry("k1")
    half.mkdir(parents=True)
    (half / "features.safetensors").write_bytes(b"partial")
    (cache.root / ".tmp-k1-99-1").mkdir()
    assert cache.load("k1") is None
    cache.save("k1", features, labels, {"ids": list("abcde")})
    loaded = cache.load("k1")
    assert torch.equal(loaded.features, features) and torch.equal(loaded.labels, labels)
    assert loaded.ids == list("abcde") and loaded.meta["key"] == "k1"
    # a second writer of the same key keeps the first entry; no temp folders are left behind by save
    cache.save("k1", features + 1, labels, {"ids": list("abcde")})
    assert torch.equal(cache.load("k1").features, features)
    assert [p.name for p in cache.root.iterdir() if p.name.startswith(".tmp-") and "99" not in p.name] == []


# -- head training on tensors --------------------------------------------------------------------------------------
def test_batch_order_walks_seeded_permutations():
    batches = batch_order(10, 4, seed=3)
    first = [next(batches) for _ in range(5)]  # 20 items = two full permutations
    flat = [i for batch in first for i in batch]
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:]) == list(range(10))
    again = batch_order(10, 4, seed=3)
    assert [next(again) for _ in range(5)] == first
    other = batch_order(10, 4, seed=4)
    assert [next(other) for _ in range(5)] != first


def test_cosine_schedule_by_hand():
    """Heads use the one shared schedule (train.optim's warmup_cosine, decaying to 0), with these numbers."""
    import fgvlm.heads.training as head_training
    from fgvlm.train.optim import warmup_cosine

    assert head_training.warmup_cosine is warmup_cosine and not hasattr(head_training, "cosine_lambda")
    factor = warmup_cosine(total_steps=10, warmup_steps=2)
    assert [factor(0), factor(1)] == [0.5, 1.0]  # linear warmup
    assert factor(2) == 1.0 and factor(10) == 0.0
    assert math.isclose(factor(6), 0.5)  # half-way through the 8 decay steps: cos(pi/2) -> 0.5


def test_head_learns_separable_features_and_keeps_the_best_step():
    x, y = clusters(240, 16, 6, seed=0)
    xv, yv = clusters(60, 16, 6, seed=1)
    recipe = HeadRecipe(steps=300, lr=1e-2, eval_every=50, log_every=100)
    result = train_head(TensorFeatures(x), y, 6, recipe, val=(TensorFeatures(xv), yv))
    xt, yt = clusters(60, 16, 6, seed=2)
    accuracy = (result.head(xt).argmax(1) == yt).float().mean().item()
    assert accuracy > 0.9 and result.best_val["accuracy"] > 0.9
    evals = [r for r in result.log if r["val_accuracy"] is not None]
    assert [r["step"] for r in evals] == [50, 100, 150, 200, 250, 300]
    assert all(list(r)[:7] == list(TRAIN_LOG_KEYS) for r in result.log)  # the shared train_log schema
    assert [r["step"] for r in result.log if r["train_loss"] is not None] == [100, 200, 300]
    assert evals[-1]["epoch"] == 300 * 32 / 240 and 0 < evals[-1]["val_top5"] <= 1
    # best = highest accuracy, ties broken by lower loss; its weights are the ones returned
    best = max(evals, key=lambda r: (r["val_accuracy"], -round(r["val_loss"], 5)))
    assert result.best_step == best["step"] and result.best_val["accuracy"] == best["val_accuracy"]
    assert math.isclose(nn_loss(result.head, xv, yv), best["val_loss"], rel_tol=1e-4)
    # same seed -> the same head, bit for bit; the global RNG is left alone
    state = torch.random.get_rng_state()
    again = train_head(TensorFeatures(x), y, 6, recipe, val=(TensorFeatures(xv), yv))
    assert torch.equal(torch.random.get_rng_state(), state)
    first, second = result.head.state_dict(), again.head.state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_standardisation_is_saved_in_the_head(tmp_path):
    from fgvlm.heads.model import load_head, save_head

    x, y = clusters(120, 8, 4, seed=0)
    x = x * 50 + 1000  # badly scaled features
    result = train_head(TensorFeatures(x), y, 4, HeadRecipe(steps=200, lr=1e-2, standardize=True, head="mlp"))
    assert torch.allclose(result.head.mean, x.mean(0)) and torch.allclose(result.head.std, x.std(0))
    save_head(result.head, tmp_path, {"prompt": "p"})
    loaded, info = load_head(tmp_path)
    assert info["head"]["kind"] == "mlp" and info["prompt"] == "p"
    assert torch.equal(loaded(x), result.head(x))
    assert (loaded(x).argmax(1) == y).float().mean() > 0.9


def test_holdout_and_sweep_rank_points():
    labels = torch.tensor([0] * 10 + [1] * 5 + [2] * 1)
    keep, held = holdout_indices(labels, 0.2, seed=0)
    assert sorted(keep + held) == list(range(16)) and not set(keep) & set(held)
    assert [int(labels[held].eq(c).sum()) for c in range(3)] == [2, 1, 0]  # a singleton class stays in training
    x, y = clusters(120, 8, 4, seed=0, spread=2.0)
    xv, yv = clusters(40, 8, 4, seed=1, spread=2.0)
    features = {("mean", -1): (x, y, xv, yv), ("last", -1): (torch.randn(120, 8), y, torch.randn(40, 8), yv)}
    grid = SweepConfig(poolings=["mean", "last"], lrs=[1e-2, 1e-5])
    rows = run_sweep(grid, HeadRecipe(steps=100, eval_every=50), lambda p, layer: features[p, layer], 4)
    assert len(rows) == 4
    assert (rows[0]["pooling"], rows[0]["lr"]) == ("mean", 1e-2)  # informative features, usable lr
    assert rows == sorted(rows, key=lambda r: (-r["val_accuracy"], r["val_loss"]))


# -- config ----------------------------------------------------------------------------------------------------------
def test_config_rejects_first_token_pooling_and_bad_values():
    with pytest.raises(ConfigError, match="first"):
        resolve_config(HeadTrainConfig, overrides=["pooling=first"])
    with pytest.raises(ConfigError, match="standardi"):
        resolve_config(HeadTrainConfig, overrides=["online=true", "standardize=true"])
    with pytest.raises(ConfigError, match="sweep.poolings"):
        resolve_config(HeadTrainConfig, overrides=["sweep_grid.poolings=[mean, cls]"])
    cfg = resolve_config(HeadTrainConfig, flags={"pooling": "last"}, overrides=["lr=1e-3", "model.name=/some/dir"])
    assert (cfg.pooling, cfg.lr, cfg.model.name, cfg.steps) == ("last", 1e-3, "/some/dir", 2000)


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "heads").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(path):
    cfg = from_dict(HeadTrainConfig, load_yaml(path), where=str(path))
    assert cfg.pooling != "first" and cfg.steps == 2000


# -- the command end to end on the dummy backend -------------------------------------------------------------------
def test_head_train_writes_the_run_and_reuses_the_cache(tmp_path):
    cache = ["--set", f"cache_dir={tmp_path / 'cache'}", "--set", "steps=40", "--set", "eval_every=20"]
    common = ["--model", "dummy", "--dataset", "synthflowers", *SYNTH, *cache]
    summary = run_head("train", *common, "--out", str(tmp_path / "a"))
    run = tmp_path / "a"
    expected = {"config.yaml", "meta.json", "head.safetensors", "head.json", "metrics.json", "predictions.jsonl",
                "confusion.json", "train_log.jsonl", "done.json"}  # fmt: skip
    assert expected <= {p.name for p in run.iterdir()}
    assert summary["n"] == 12 and summary["pooling"] == "mean" and summary["training"] == "cached"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["mode"] == "head" and metrics["protocol"] == "official" and metrics["top5_accuracy"] == 1.0
    assert (metrics["kind"], metrics["model"], metrics["num_classes"], metrics["split"]) == (
        "head-train",
        "dummy",
        4,
        "test",
    )
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [20, 40] and all(list(r) == list(TRAIN_LOG_KEYS) for r in log)
    # the completion marker is the last file written
    others = [p.stat().st_mtime_ns for p in run.iterdir() if p.is_file() and p.name != "done.json"]
    assert (run / "done.json").stat().st_mtime_ns >= max(others)
    lines = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    assert len(lines) == 12 and set(lines[0]) == {"id", "label", "pred", "topk"} and len(lines[0]["topk"]) == 4
    assert all(line["pred"] == line["topk"][0][0] for line in lines)
    assert all(abs(sum(p for _, p in line["topk"]) - 1) < 1e-4 for line in lines)  # 4 classes: all of them
    info = json.loads((run / "head.json").read_text())
    assert info["backbone"]["source"] == "base" and info["pooling"] == "mean" and info["head"]["num_classes"] == 4
    meta = json.loads((run / "meta.json").read_text())
    assert [(f["split"], f["cached"]) for f in meta["features"]] == [("train", False), ("val", False), ("test", False)]
    # rerun: nothing extracted; another pooling: new entries
    run_head("train", *common, "--out", str(tmp_path / "b"))
    meta = json.loads((tmp_path / "b" / "meta.json").read_text())
    assert all(f["cached"] for f in meta["features"])
    run_head("train", *common, "--pooling", "last", "--out", str(tmp_path / "c"))
    meta_c = json.loads((tmp_path / "c" / "meta.json").read_text())
    assert not any(f["cached"] for f in meta_c["features"])
    assert len(list((tmp_path / "cache" / "features").iterdir())) == 6
    # the same command again: complete, skipped, the stored metrics
    again = run_head("train", *common, "--out", str(tmp_path / "a"))
    assert again == summary and json.loads((run / "metrics.json").read_text()) == metrics
    # a partial run (no done.json) is trained again, from the cached features, to the same head
    (run / "done.json").unlink()
    weights = (run / "head.safetensors").read_bytes()
    assert run_head("train", *common, "--out", str(tmp_path / "a")) == summary
    assert (run / "done.json").is_file() and (run / "head.safetensors").read_bytes() == weights
    # head eval reproduces the test metrics from the saved head
    result = CliRunner().invoke(app, ["eval", "--run", str(run), "--split", "test", "--json"])
    assert result.exit_code == 0, result.output
    evaluated = json.loads((run / "eval-test" / "metrics.json").read_text())
    assert evaluated["accuracy"] == metrics["accuracy"] and evaluated["kind"] == "head-eval"
    assert (run / "eval-test" / "done.json").is_file()
    limited = CliRunner().invoke(
        app, ["eval", "--run", str(run), "--split", "val", "--limit", "5", "-o", str(tmp_path / "v5")]
    )
    assert limited.exit_code == 0, limited.output
    assert json.loads((tmp_path / "v5" / "metrics.json").read_text())["n"] == 5
    # --limit caps every split the head reads (a limited split is its own cache entry)
    capped = run_head("train", *common, "--limit", "3", "--out", str(tmp_path / "d"))
    meta_d = json.loads((tmp_path / "d" / "meta.json").read_text())
    assert capped["n"] == 3 and not any(f["cached"] for f in meta_d["features"])


# -- the tiny random Qwen3-VL ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_qwen(tiny_model_dir):  # noqa: F811 (the imported fixture)
    """(model directory, loaded backend) of the tiny random Qwen3-VL, loaded once for this module."""
    from fgvlm.models.base import ModelConfig
    from fgvlm.models.loading import load_backend

    path = str(tiny_model_dir("qwen3-vl"))
    return path, load_backend(ModelConfig(name=path))


TINY_SYNTH = "data.options={num_classes: 4, images_per_class: [6, 3, 3], image_size: 32}"


def tiny_config(model: str, cache: Path, *extra: str) -> HeadTrainConfig:
    base = [f"model.name={model}", "data.dataset=synthflowers", TINY_SYNTH, f"cache_dir={cache}", "steps=20",
            "batch_size=4", "eval_every=10", "embed_batch_size=8", "lr=1e-2"]  # fmt: skip
    return resolve_config(HeadTrainConfig, overrides=[*base, *extra])


def read_predictions(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]


def test_online_training_reaches_the_cached_predictions(tmp_path, tiny_qwen):
    """Backbone in the loop (reference way) vs cached features: same seed -> same batches, init, dropout, head."""
    from fgvlm.heads.model import load_head
    from fgvlm.heads.pipeline import train_run

    model, backend = tiny_qwen
    cached = train_run(tiny_config(model, tmp_path / "cache"), tmp_path / "cached", progress=False, backend=backend)
    online_cfg = tiny_config(model, tmp_path / "cache", "online=true")
    online = train_run(online_cfg, tmp_path / "online", progress=False, backend=backend)
    assert (cached["training"], online["training"]) == ("cached", "online")
    a, b = read_predictions(tmp_path / "cached"), read_predictions(tmp_path / "online")
    assert [line["pred"] for line in a] == [line["pred"] for line in b]
    assert len({line["pred"] for line in a}) > 1  # a real prediction, not one class everywhere
    for x, y in zip(a, b, strict=True):
        assert [c for c, _ in x["topk"]] == [c for c, _ in y["topk"]]
        assert all(abs(p - q) < 1e-4 for (_, p), (_, q) in zip(x["topk"], y["topk"], strict=True))
    head_a, info_a = load_head(tmp_path / "cached")
    head_b, info_b = load_head(tmp_path / "online")
    assert info_a["best_step"] == info_b["best_step"]
    for key, value in head_a.state_dict().items():
        assert torch.allclose(value, head_b.state_dict()[key], atol=1e-5), key
    assert info_a["backbone"]["source"] == "local" and info_a["backbone"]["path"] == str(Path(model).resolve())
    # the online run extracted nothing into the cache; the cached run wrote train, val and test
    meta = json.loads((tmp_path / "online" / "meta.json").read_text())
    assert meta["features"] == [] and meta["training"] == "online"
    assert len(list((tmp_path / "cache" / "features").iterdir())) == 3


@pytest.mark.slow
def test_two_process_extraction_equals_one_process(tmp_path, tiny_qwen):
    """torchrun --nproc_per_node 2 (CPU, gloo): shards gathered in dataset order give the single-process features."""
    from fgvlm.heads.cache import FeatureCache
    from fgvlm.heads.pipeline import train_run

    model, backend = tiny_qwen
    train_run(tiny_config(model, tmp_path / "one", "steps=2"), tmp_path / "run1", progress=False, backend=backend)
    sets = ["--set", TINY_SYNTH]
    for item in (f"model.name={model}", "data.dataset=synthflowers", f"cache_dir={tmp_path / 'two'}", "steps=2",
                 "embed_batch_size=8", "lr=1e-2", "batch_size=4", "eval_every=10"):  # fmt: skip
        sets += ["--set", item]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "fgvlm", "head", "train", *sets, "--out", str(tmp_path / "run2")]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    one, two = FeatureCache(tmp_path / "one"), FeatureCache(tmp_path / "two")
    keys = sorted(p.name for p in one.root.iterdir())
    assert keys == sorted(p.name for p in two.root.iterdir()) and len(keys) == 3  # same ingredients, same keys
    for key in keys:
        a, b = one.load(key), two.load(key)
        assert b.meta["processes"] == 2 and a.meta["processes"] == 1 and a.ids == b.ids
        assert torch.allclose(a.features, b.features, atol=1e-5) and torch.equal(a.labels, b.labels)
    assert read_predictions(tmp_path / "run2") and not (tmp_path / "run2" / "rank1").exists()


@pytest.mark.parametrize("val_split", ["val", "null"])
def test_head_train_sweep_picks_the_best_point_and_reuses_its_features(tmp_path, val_split):
    grid = "sweep_grid={poolings: [mean, last], layers: [-1, -2], lrs: [1e-2, 1e-4], steps: 20}"
    argv = ["train", "--model", "dummy", "--dataset", "synthflowers", *SYNTH, "--sweep", "--set", grid,
            "--set", f"val_split={val_split}", "--set", f"cache_dir={tmp_path / 'cache'}", "--set", "steps=20",
            "--out", str(tmp_path / "run")]  # fmt: skip
    summary = run_head(*argv)
    sweep = json.loads((tmp_path / "run" / "sweep.json").read_text())
    assert len(sweep["rows"]) == 8 and sweep["best"] == sweep["rows"][0]
    assert sweep["scored_on"] == ("val" if val_split == "val" else "20% hold-out of train")
    info = json.loads((tmp_path / "run" / "head.json").read_text())
    best = sweep["best"]
    assert (info["pooling"], info["layer"], info["recipe"]["lr"]) == (best["pooling"], best["layer"], best["lr"])
    assert (summary["pooling"], summary["layer"]) == (best["pooling"], best["layer"])
    features = json.loads((tmp_path / "run" / "meta.json").read_text())["features"]
    swept = 4 * (2 if val_split == "val" else 1)  # train (+ val) for each pooling x layer
    assert [f["cached"] for f in features[:swept]] == [False] * swept
    assert all(f["cached"] for f in features[swept:-1]) and features[-1]["split"] == "test"
