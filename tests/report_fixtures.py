"""Session fixture for report tests: a study folder of real runs made by the real CLI on tiny settings.

``report_study`` holds ``eval-rank`` and ``eval-generate`` (zero-shot, tiny Qwen3-VL), ``head`` (a linear probe on
its features) and ``cnn`` (timm's test_resnet for two epochs), all on the same small synthflowers (12 classes, 8/4/4
images per class), so their test image ids name the same images. Built once per session.
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

DATA = ("--set", "data.options={images_per_class: [8, 4, 4]}")  # 12 classes: 96 train, 48 val, 48 test images
RUNS = {
    "eval-rank": ["eval", "--model", "tiny-qwen3-vl", "--dataset", "synthflowers", "--mode", "rank", *DATA],
    "eval-generate": [
        *("eval", "--model", "tiny-qwen3-vl", "--dataset", "synthflowers", "--mode", "generate", "--limit", "24"),
        *("--set", "max_new_tokens=8", *DATA),
    ],
    "head": [
        *("head", "train", "--config", str(REPO / "configs/heads/synthflowers-tiny.yaml"), "--steps", "60"),
        *("--set", "eval_every=20", *DATA),
    ],
    "cnn": [
        *("cnn", "train", "--config", str(REPO / "configs/cnn/test-resnet-synthflowers.yaml")),
        *("--set", "epochs=2", "--set", "progress=false", *DATA),
    ],
}


def run_cli(argv: list[str]) -> None:
    """``fgvlm ARGV`` in this process (no interpreter start per run); fails the test on a non-zero exit."""
    from fgvlm.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 0, f"fgvlm {' '.join(argv)} exited with {exit_.value.code}"


@pytest.fixture(scope="session")
def report_study(tmp_path_factory: pytest.TempPathFactory, tiny_cache: Path) -> Path:
    """A study directory with four finished runs (see the module docstring)."""
    study = tmp_path_factory.mktemp("report-study")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FGVLM_CACHE", str(tiny_cache))
        for name, argv in RUNS.items():
            run_cli([*argv, "--out", str(study / name)])
    return study
