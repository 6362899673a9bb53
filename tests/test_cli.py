"""The CLI end to end: `fgvlm data info`, `fgvlm list`, clear errors, and a torch-free `import fgvlm`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fgvlm.cli import main


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_:
        main(list(argv))
    out, err = capsys.readouterr()
    return exit_.value.code, out, err


@pytest.mark.parametrize(
    ("protocol", "sizes"),
    [("official", {"train": 408, "val": 306, "test": 306}), ("swapped", {"train": 306, "val": 306, "test": 408})],
)
def test_data_info_json_on_mini(capsys, flowers_mini, protocol, sizes):
    code, out, _ = run_cli(
        capsys, "data", "info", "--dataset", "flowers102", "--root", str(flowers_mini), "--protocol", protocol, "--json"
    )
    info = json.loads(out)
    assert code == 0
    assert info["splits"] == sizes and info["num_classes"] == 102 and info["protocol"] == protocol
    assert info["dataset"] == "flowers102" and info["root"] == str(flowers_mini)


def test_data_info_table_on_full_metadata(capsys, flowers_meta):
    code, out, _ = run_cli(
        capsys, "data", "info", "--dataset", "flowers102", "--root", str(flowers_meta), "--protocol", "trainval"
    )
    assert code == 0 and "2040" in out and "6149" in out and "1020" not in out


def test_unknown_dataset_suggests_close_match(capsys):
    code, _, err = run_cli(capsys, "data", "info", "--dataset", "flower102")
    assert code == 2 and "Did you mean flowers102" in err


def test_list_models_and_datasets(capsys):
    code, out, _ = run_cli(capsys, "list", "models", "--json")
    models = json.loads(out)
    assert code == 0 and models["qwen3-vl-4b"]["hub_id"] == "Qwen/Qwen3-VL-4B-Instruct"
    assert models["instructblip-flan-t5-xl"]["family"] == "instructblip-t5"
    code, out, _ = run_cli(capsys, "list", "datasets", "--json")
    assert set(json.loads(out)) >= {"flowers102", "synthflowers", "imagefolder", "hf"}


def test_help_has_examples(capsys):
    code, out, _ = run_cli(capsys, "data", "info", "--help")
    assert code == 0 and "Examples" in out and "--protocol" in out


def test_import_fgvlm_and_its_configs_does_not_import_torch():
    modules = "fgvlm, fgvlm.cli, fgvlm.data, fgvlm.config, fgvlm.runs, fgvlm.train.cnn_config, fgvlm.heads.config"
    code = f"import sys, {modules}, fgvlm.eval.zeroshot; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
