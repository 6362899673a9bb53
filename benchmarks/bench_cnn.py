"""Training speed of ``fgvlm cnn train`` (``train_cnn``, the CLI's code path) against a plain timm + torch loop.

Both train the same model (test_resnet, 12 synthflowers classes at 64 px, batch 32, SGD, label-smoothed
cross-entropy, no MixUp) on the same pre-resized in-memory images through the same transform and a DataLoader
without workers, with the same torch thread count. Images/s is measured over epochs 2..N (epoch 1 warms up);
the reference runs before and after ours and their mean is the baseline, to cancel drift on a shared machine.
Ours keeps its defaults (channels_last on); per-epoch validation is off so only training is timed.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

EPOCHS = 5
THREADS = 1  # several threads on a busy 2-core box wait on each other; one thread is stable and fair to both
OVERRIDES = [
    "arch=test_resnet",
    "image_size=64",
    "batch_size=32",
    "lr=0.05",
    f"epochs={EPOCHS}",
    "num_workers=0",
    f"num_threads={THREADS}",
    "progress=false",
    "val_split=null",
    "mixup=false",
    "cutmix=false",
]


def config():
    from fgvlm.config import resolve_config
    from fgvlm.train.cnn import CNNTrainConfig

    return resolve_config(
        CNNTrainConfig,
        None,
        {"data.dataset": "synthflowers"},
        ["data.options={num_classes: 12, image_size: 64}", *OVERRIDES],
    )


def reference_images_per_s() -> float:
    """A plain loop as one writes it from the timm docs: same data, model, batch, loss, optimizer."""
    import timm
    import torch
    from timm.data import create_transform, resolve_data_config

    from fgvlm.data import create_dataset
    from fgvlm.train.images import ImageClassificationData, cache_split

    cfg = config()
    torch.manual_seed(0)
    split = create_dataset(cfg.data).split("train")
    model = timm.create_model("test_resnet", num_classes=12)
    data_cfg = resolve_data_config({"input_size": (3, 64, 64)}, model=model)
    transform = create_transform(**data_cfg, is_training=True, scale=tuple(cfg.crop_scale), color_jitter=None)
    data = ImageClassificationData(cache_split(split, 74, progress=False), split.labels, transform)
    loader = torch.utils.data.DataLoader(data, batch_size=32, shuffle=True, drop_last=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4)
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    rates = []
    for _ in range(EPOCHS):
        model.train()
        start, seen = time.perf_counter(), 0
        for images, labels in loader:
            loss = criterion(model(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            seen += len(labels)
        rates.append(seen / (time.perf_counter() - start))
    return statistics.mean(rates[1:])


def fgvlm_images_per_s() -> float:
    import json

    from fgvlm.train.cnn import train_cnn

    with tempfile.TemporaryDirectory() as tmp:
        train_cnn(config(), Path(tmp) / "run")
        log = [json.loads(line) for line in (Path(tmp) / "run" / "train_log.jsonl").read_text().splitlines()]
    return statistics.mean(r["images_per_s"] for r in log[1:])


def run() -> list[dict]:
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        before = reference_images_per_s()
        ours = fgvlm_images_per_s()
        after = reference_images_per_s()
    finally:
        torch.set_num_threads(previous)
    baseline = (before + after) / 2
    detail = (
        f"fgvlm {ours:.0f} img/s vs plain timm+torch loop {baseline:.0f} img/s (before {before:.0f}, after "
        f"{after:.0f}); test_resnet 64 px, batch 32, {THREADS} thread, epochs 2-{EPOCHS}"
    )
    return [
        {
            "name": "cnn_train_speed_over_reference",
            "value": ours / baseline,
            "op": ">=",
            "target": 1.0,
            "detail": detail,
        },
        {"name": "cnn_train_images_per_s", "value": ours, "detail": detail},
    ]
