"""The GPU benchmark scripts skip cleanly without CUDA and their code path runs on CPU (``--device cpu --tiny``).

What they measure needs a GPU; here they must import, say ``no CUDA: skipped`` and exit 0, and their smoke mode must
train and evaluate tiny-qwen3-vl through the same functions (collator, packing, answer loss, backend).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["gpu_sft", "gpu_eval"])
def test_skips_without_cuda(name: str, capsys: pytest.CaptureFixture) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA present: the script would run for real")
    assert load(name).main([]) == 0
    assert f"{name}: no CUDA: skipped" in capsys.readouterr().out


def test_gpu_sft_smoke_on_cpu(use_tiny_cache, capsys: pytest.CaptureFixture) -> None:
    argv = ["--device", "cpu", "--tiny", "--steps", "1", "--warmup", "1", "--workers", "0", "--batch-size", "2"]
    argv += ["--modes", "padded,packed,rank", "--negatives", "3", "--image-size", "224", "224"]
    assert load("gpu_sft").main(argv) == 0
    out = capsys.readouterr().out
    for mode in ("padded", "packed"):
        assert f"gpu_sft mode {mode}: 1 steps" in out and "samples/s" in out
    assert "gpu_sft mode rank (objective rank, 3 negatives, batch 1): 1 steps" in out


def test_gpu_eval_smoke_on_cpu(use_tiny_cache, capsys: pytest.CaptureFixture) -> None:
    argv = ["--device", "cpu", "--tiny", "--rank-images", "1", "--generate-images", "2", "--batch-size", "2"]
    assert load("gpu_eval").main(argv) == 0
    out = capsys.readouterr().out
    assert "gpu_eval rank:" in out and "1 images x 102 names" in out
    assert "gpu_eval generate:" in out and "(2 images, batch 2" in out


def test_peak_table_matches_device_names() -> None:
    peak = load("gpu_sft").bf16_peak_tflops
    assert peak("NVIDIA H200") == peak("NVIDIA H100 80GB HBM3") == 989.0
    assert peak("NVIDIA A100-SXM4-40GB") == 312.0 and peak("NVIDIA A10") == 125.0
    assert peak("NVIDIA L40S") == 362.0 and peak("NVIDIA GH200 480GB") == 989.0
    assert peak("Some Future GPU") is None
