"""The CLI end to end: `fgvlm data info`, `fgvlm list`, clear errors, and a torch-free `import fgvlm`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fgvlm.cli import main
from fgvlm.config import ConfigError


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
    modules = "fgvlm, fgvlm.cli, fgvlm.data, fgvlm.config, fgvlm.runs, fgvlm.kinds, fgvlm.train.cnn_config"
    modules += ", fgvlm.heads.config, fgvlm.data.audit"
    code = f"import sys, {modules}, fgvlm.eval.zeroshot; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def all_commands():
    """(path, click command) for every leaf command of the CLI."""
    import typer.main

    from fgvlm.cli import app

    def walk(command, path):
        if hasattr(command, "commands"):  # a group (typer ships its own click)
            for name, sub in command.commands.items():
                yield from walk(sub, (*path, name))
        else:
            yield path, command

    return list(walk(typer.main.get_command(app), ()))


def test_one_meaning_per_flag_across_the_cli():
    """-o is --out (a Path), -c is --config, --set is the parameter `overrides`, in every command that has them."""
    seen = set()
    for path, command in all_commands():
        for param in command.params:
            if "-o" in param.opts:
                assert set(param.opts) == {"--out", "-o"}, path
            if "-c" in param.opts:
                assert set(param.opts) == {"--config", "-c"}, path
            if "--set" in param.opts:
                assert param.name == "overrides", path
                seen.add(path)
            if "--out" in param.opts:
                assert param.type_descriptor.annotation is Path, (path, param.type_descriptor)
    assert {("eval",), ("head", "train"), ("cnn", "train"), ("data", "audit")} <= seen


@pytest.mark.parametrize("command", [["eval"], ["head", "train"], ["sft"], ["rl"]])
def test_a_real_dataset_needs_a_model(capsys, flowers_mini, tmp_path, command):
    """No silent fall-back to the random tiny model on real data: one line saying what to pass."""
    argv = [*command, "--dataset", "flowers102", "--root", str(flowers_mini), "--out", str(tmp_path / "run")]
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and "no model given for dataset 'flowers102'" in err and "--model" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


def test_fgvlm_rl_refuses_another_objective(capsys, tmp_path):
    code, _, err = run_cli(capsys, "rl", "--set", "objective=generate", "--out", str(tmp_path / "run"))
    assert code == 2 and "fgvlm rl trains objective rl; the config says objective 'generate'" in err
    assert not (tmp_path / "run").exists()


def test_the_offline_demo_dataset_may_use_the_default_model():
    from fgvlm.commands.common import require_model
    from fgvlm.config import given_keys, resolve_config
    from fgvlm.eval.zeroshot import EvalConfig

    require_model(resolve_config(EvalConfig), set(), "fgvlm eval")  # synthflowers: the tiny default is fine
    cfg = resolve_config(EvalConfig, None, {"data.dataset": "flowers102"}, ["model={name: qwen3-vl-4b}"])
    require_model(cfg, given_keys(None, {"data.dataset": "flowers102"}, ["model={name: qwen3-vl-4b}"]), "x")
    with pytest.raises(ConfigError, match="no model given"):
        require_model(cfg, given_keys(None, {"data.dataset": "flowers102"}, ["model.dtype=bfloat16"]), "x")
