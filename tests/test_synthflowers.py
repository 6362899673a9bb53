"""SynthFlowers: stable classes and names, byte-identical drawing per seed, slicing, options, learnability."""

from __future__ import annotations

import hashlib
import json
import re

import numpy as np
import pytest
from typer.testing import CliRunner

from fgvlm.config import DataConfig
from fgvlm.data import DatasetError, Split, create_dataset
from fgvlm.data.synthflowers import SynthFlowers, class_table
from fgvlm.registry import resource_json

# Pinned: renaming a class silently would break every stored result and prompt that uses these names.
DEFAULT_NAMES = [
    "amberlit hexalume", "blushdusk hexalume", "azurfrost pennaspine", "plumlit tessalume", "emberlit tessaspine",
    "amberfrost octaspine", "goldfrost tessalume", "plumfrost tessacleft", "blushlit octalume", "golddusk hexacleft",
    "goldfrost hexalume", "goldlit pennalume",
]  # fmt: skip


def digest(image) -> str:
    return hashlib.sha256(image.tobytes()).hexdigest()


def test_defaults_classes_and_split_sizes():
    ds = create_dataset(DataConfig(dataset="synthflowers"))
    assert ds.class_names == DEFAULT_NAMES
    assert ds.prompt_names == DEFAULT_NAMES and ds.aliases == {}
    assert ds.split_sizes() == {"train": 12 * 24, "val": 12 * 8, "test": 12 * 8}
    assert ds.per_class_counts("train") == {"min": 24, "median": 24, "max": 24}
    sample = ds.split("val")[8 * 3]  # class-major order: the first val image of class 3
    assert (sample.id, sample.label) == ("val-00024", 3)
    assert sample.image.mode == "RGB" and sample.image.size == (64, 64)
    assert ds.attributes(0) == {"petals": 6, "shape": "lume", "hue": 0.075, "centre": (235, 200, 40)}  # amber, lit
    assert ds.attributes(7) == {"petals": 4, "shape": "cleft", "hue": 0.76, "centre": (245, 245, 235)}  # plum, frost
    info = ds.describe()
    assert info["dataset"] == "synthflowers" and info["root"] is None and info["seed"] == 0
    assert "petal count" in info["protocol_description"]


def test_names_are_invented_distinct_and_prefix_stable():
    table = class_table()
    names = [flower.name for flower in table]
    assert len(table) == 216 and len(set(names)) == 216
    assert len({(f.hue, f.centre, f.petals, f.shape) for f in table}) == 216
    real_words = {word for name in resource_json("flowers102_classes.json") for word in re.findall(r"[a-z]+", name)}
    for name in names:
        assert re.fullmatch(r"[a-z]+ [a-z]+", name), name
        assert not set(name.split()) & real_words, name
    assert SynthFlowers(num_classes=5).class_names == DEFAULT_NAMES[:5]
    assert SynthFlowers(num_classes=40).class_names[:12] == DEFAULT_NAMES


def test_same_seed_same_bytes_other_seed_other_images():
    first, again = SynthFlowers(seed=3), SynthFlowers(seed=3)
    other = SynthFlowers(seed=4)
    for split, index in (("train", 0), ("train", 200), ("test", 95)):
        assert digest(first.split(split)[index].image) == digest(again.split(split)[index].image)
        assert digest(first.split(split)[index].image) != digest(other.split(split)[index].image)
    train, test = first.split("train"), first.split("test")
    assert len({digest(train[i].image) for i in range(24)}) == 24  # nuisances vary within a class
    assert digest(train[0].image) != digest(test[0].image)  # the split enters the seed


def test_options_and_their_errors():
    ds = SynthFlowers(num_classes=3, image_size=32, images_per_class={"train": 2, "val": 0})
    assert ds.split_names == ["train", "test"] and ds.split_sizes() == {"train": 6, "test": 24}
    assert ds.split("train")[5].image.size == (32, 32) and ds.split("train")[5].label == 2
    assert SynthFlowers(images_per_class=[1, 2, 3]).split_sizes() == {"train": 12, "val": 24, "test": 36}
    assert SynthFlowers(images_per_class=5).split_sizes() == {"train": 60, "val": 60, "test": 60}
    with pytest.raises(DatasetError, match=r"unknown option\(s\) petals; known options: num_classes, image_size"):
        create_dataset(dataset="synthflowers", options={"petals": 5})
    with pytest.raises(DatasetError, match=r"num_classes must be an integer in 2\.\.216, got 500"):
        SynthFlowers(num_classes=500)
    with pytest.raises(DatasetError, match=r"images_per_class has unknown split\(s\) \['dev'\]"):
        SynthFlowers(images_per_class={"dev": 3})
    with pytest.raises(DatasetError, match="image_size must be an integer >= 16"):
        SynthFlowers(image_size=8)
    with pytest.raises(DatasetError, match="unknown protocol 'swapped'"):
        SynthFlowers(protocol="swapped")


def test_cli_data_info_json():
    from fgvlm.cli import app

    result = CliRunner().invoke(
        app, ["data", "info", "--dataset", "synthflowers", "--json", "--option", "num_classes=8"]
    )
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["num_classes"] == 8 and info["splits"] == {"train": 192, "val": 64, "test": 64}
    assert info["per_class"]["test"] == {"min": 8, "median": 8, "max": 8}


@pytest.fixture
def one_torch_thread():
    """One intra-op thread: on 2 shared cores it trains several times faster than two spinning ones."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_a_tiny_cnn_learns_it(one_torch_thread):
    """Four conv blocks, 12 epochs on 360 images at 32 px (~3 s): measured 0.958 test accuracy, chance 0.083."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    ds = SynthFlowers(image_size=32, images_per_class={"train": 30, "val": 0, "test": 10}, seed=1)

    def tensors(split):
        samples = ds.split(split)
        pixels = np.stack([np.asarray(sample.image) for sample in samples])
        return torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255, torch.tensor(samples.labels)

    (x_train, y_train), (x_test, y_test) = tensors("train"), tensors("test")

    def block(c_in, c_out):
        return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(2))

    model = nn.Sequential(block(3, 16), block(16, 32), block(32, 64), block(64, 64), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(64, ds.num_classes))  # fmt: skip
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    for _ in range(12):
        model.train()
        for batch in torch.randperm(len(y_train)).split(32):
            loss = nn.functional.cross_entropy(model(x_train[batch]), y_train[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
    print(f"synthflowers tiny-CNN test accuracy {accuracy:.3f} (chance {1 / ds.num_classes:.3f})")
    assert accuracy > 6 / ds.num_classes  # six times chance


def test_a_split_slices_like_a_sequence():
    test = create_dataset(dataset="synthflowers").split("test")
    first_two = test[:2]
    assert isinstance(first_two, Split) and first_two.dataset is test.dataset and first_two.name == "test"
    assert len(first_two) == 2 and first_two.ids == test.ids[:2] and first_two.labels == test.labels[:2]
    assert [digest(s.image) for s in first_two] == [digest(test[0].image), digest(test[1].image)]
    assert test[-3:].ids == test.ids[-3:] and test[::24].labels == test.labels[::24] and len(test[5:5]) == 0
    assert first_two[1].id == test[1].id and first_two[:1].ids == test.ids[:1]
    with pytest.raises(IndexError):
        first_two[2]
