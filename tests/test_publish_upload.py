"""The upload path at the ``huggingface_hub.HfApi`` boundary, with a recording stand-in (the Hub is unreachable here,
and that boundary is the only place a stand-in is right): the calls, the repository type, the files and the commit
message; an error gives one line and no "published" record; a second attempt resumes the same commit."""

from __future__ import annotations

import json
import types
from pathlib import Path

import huggingface_hub
import pytest
from publish_fixtures import publish

from fgvlm.config import from_dict


class StandInHub:
    """What the stand-in Hub holds across attempts (repositories, branches, commits) and every call it received."""

    def __init__(self):
        self.calls: list[tuple[str, dict]] = []
        self.commits: dict[tuple[str, str], list[types.SimpleNamespace]] = {}
        self.fail: dict[str, BaseException] = {}
        """method name -> the error that call raises (once)."""
        self.lose_answer = False
        """upload_folder makes the commit, then raises (a connection lost before the answer came)."""

    def api_class(self) -> type:
        hub = self

        class RecordingHfApi:
            def __init__(self, *args, **kwargs):
                hub.calls.append(("HfApi", kwargs))

            def _call(self, name: str, **kwargs):
                hub.calls.append((name, kwargs))
                if name in hub.fail:
                    raise hub.fail.pop(name)

            def create_repo(self, repo_id, **kwargs):
                self._call("create_repo", repo_id=repo_id, **kwargs)
                hub.commits.setdefault((repo_id, "main"), [types.SimpleNamespace(commit_id="0" * 40, title="initial")])
                return f"https://huggingface.co/{repo_id}"

            def create_branch(self, repo_id, **kwargs):
                self._call("create_branch", repo_id=repo_id, **kwargs)
                hub.commits.setdefault((repo_id, kwargs["branch"]), list(hub.commits[repo_id, "main"]))

            def list_repo_commits(self, repo_id, **kwargs):
                self._call("list_repo_commits", repo_id=repo_id, **kwargs)
                return list(reversed(hub.commits[repo_id, kwargs.get("revision") or "main"]))

            def upload_folder(self, **kwargs):
                folder = Path(kwargs["folder_path"])
                files = {p.relative_to(folder).as_posix(): p.stat().st_size for p in folder.rglob("*") if p.is_file()}
                self._call("upload_folder", files=files, **kwargs)
                oid = f"{len(hub.calls):040x}"
                branch = hub.commits[kwargs["repo_id"], kwargs.get("revision") or "main"]
                branch.append(types.SimpleNamespace(commit_id=oid, title=kwargs["commit_message"]))
                if hub.lose_answer:
                    hub.lose_answer = False
                    raise ConnectionError("Connection reset by peer")
                return types.SimpleNamespace(
                    oid=oid, commit_url=f"https://huggingface.co/{kwargs['repo_id']}/commit/{oid}"
                )

        return RecordingHfApi

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def call(self, name: str) -> dict:
        (kwargs,) = [kwargs for called, kwargs in self.calls if called == name]
        return kwargs


@pytest.fixture
def hub(monkeypatch) -> StandInHub:
    stand_in = StandInHub()
    monkeypatch.setattr(huggingface_hub, "HfApi", stand_in.api_class())
    monkeypatch.setenv("HF_TOKEN", "hf_test_token_from_the_environment")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return stand_in


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory):
    from fgvlm.train.cnn import CNNTrainConfig, train_cnn

    out = tmp_path_factory.mktemp("upload-cnn") / "run"
    cfg = {
        "data": {"dataset": "synthflowers", "options": {"num_classes": 4, "image_size": 32}},
        "arch": "test_resnet",
        "image_size": 32,
        "epochs": 1,
        "batch_size": 8,
        "num_workers": 0,
        "num_threads": 1,
        "progress": False,
        "limit": 16,
    }
    train_cnn(from_dict(CNNTrainConfig, cfg), out)
    return out


def test_upload_is_one_commit_named_by_the_config_hash(cnn_run, hub, tmp_path, capsys):
    out = tmp_path / "pub"
    assert (
        publish(cnn_run, "--repo-id", "my-org/cnn", "--private", "--revision", "v1", "--license", "mit", "-o", out) == 0
    )
    assert hub.names() == ["HfApi", "create_repo", "create_branch", "list_repo_commits", "upload_folder"]
    assert hub.call("HfApi") == {}  # no token passed: huggingface_hub reads HF_TOKEN / the stored login itself
    assert hub.call("create_repo") == {"repo_id": "my-org/cnn", "repo_type": "model", "private": True, "exist_ok": True}
    assert hub.call("create_branch") == {
        "repo_id": "my-org/cnn",
        "branch": "v1",
        "repo_type": "model",
        "exist_ok": True,
    }
    upload = hub.call("upload_folder")
    config_hash = json.loads((cnn_run / "done.json").read_text())["config_hash"]
    assert upload["repo_type"] == "model" and upload["revision"] == "v1" and upload["repo_id"] == "my-org/cnn"
    assert upload["commit_message"] == f"fgvlm publish: cnn-train run run ({config_hash})"
    assert Path(upload["folder_path"]) == out / "upload"
    assert set(upload["files"]) == {"README.md", "config.json", "model.safetensors", "fgvlm/config.yaml",
                                    "fgvlm/metrics.json", "fgvlm/train_log.jsonl", "fgvlm/training_curves.png",
                                    "fgvlm/class_names.json"}  # fmt: skip
    record = json.loads((out / "publish.json").read_text())
    oid = hub.commits["my-org/cnn", "v1"][-1].commit_id
    assert record["state"] == "published" and record["commit"]["oid"] == oid and record["commit"]["made"]
    assert (out / "done.json").is_file() and "hf_test_token" not in (out / "config.yaml").read_text()
    assert "published 8 files" in capsys.readouterr().out
    calls = len(hub.calls)
    assert (
        publish(cnn_run, "--repo-id", "my-org/cnn", "--private", "--revision", "v1", "--license", "mit", "-o", out) == 0
    )
    assert len(hub.calls) == calls  # a complete publish run is not published again


def test_a_hub_error_is_one_line_and_a_second_attempt_makes_the_same_commit(cnn_run, hub, tmp_path, capsys):
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError

    response = httpx2.Response(403, request=httpx2.Request("POST", "https://huggingface.co/api/models/my-org/cnn"))
    hub.fail["upload_folder"] = HfHubHTTPError(
        "403 Forbidden: You don't have the rights to create a model", response=response
    )
    out = tmp_path / "pub"
    assert publish(cnn_run, "--repo-id", "my-org/cnn", "--dataset", "-o", out) == 2  # wrong type: refused locally
    assert hub.calls == [] and not out.exists()
    capsys.readouterr()
    assert publish(cnn_run, "--repo-id", "my-org/cnn", "--license", "mit", "-o", out) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert error.startswith(
        "error: upload to the model repository my-org/cnn failed (HfHubHTTPError 403: 403 Forbidden"
    )
    assert "check that the token has write access" in error and "nothing was published" in error
    assert json.loads((out / "publish.json").read_text())["state"] == "staged" and not (out / "done.json").exists()
    first_message = hub.call("upload_folder")["commit_message"]
    assert publish(cnn_run, "--repo-id", "my-org/cnn", "--license", "mit", "-o", out) == 0
    assert "reusing the folder staged by an earlier attempt" in capsys.readouterr().err
    messages = [kwargs["commit_message"] for name, kwargs in hub.calls if name == "upload_folder"]
    assert messages == [first_message, first_message]
    assert [c.title for c in hub.commits["my-org/cnn", "main"]] == ["initial", first_message]
    assert json.loads((out / "publish.json").read_text())["state"] == "published"


def test_a_commit_whose_answer_was_lost_is_found_not_made_twice(cnn_run, hub, tmp_path, capsys):
    hub.lose_answer = True
    out = tmp_path / "pub"
    assert publish(cnn_run, "--repo-id", "my-org/cnn", "-o", out) == 2
    assert "ConnectionError: Connection reset by peer" in capsys.readouterr().err
    assert not (out / "done.json").exists()
    assert publish(cnn_run, "--repo-id", "my-org/cnn", "-o", out) == 0
    assert [name for name in hub.names() if name == "upload_folder"] == ["upload_folder"]
    commit = json.loads((out / "publish.json").read_text())["commit"]
    assert commit["made"] is False and commit["oid"] == hub.commits["my-org/cnn", "main"][-1].commit_id
    assert "an earlier attempt had already made this commit" in capsys.readouterr().out


def test_no_token_or_offline_fails_before_any_request(cnn_run, hub, tmp_path, monkeypatch, capsys):
    from huggingface_hub import constants

    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    assert publish(cnn_run, "--repo-id", "my-org/cnn", "-o", tmp_path / "a") == 2
    assert "no Hugging Face token: set HF_TOKEN in the environment or run `hf auth login`" in capsys.readouterr().err
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert publish(cnn_run, "--repo-id", "my-org/cnn", "-o", tmp_path / "b") == 2
    assert "HF_HUB_OFFLINE=1 is set" in capsys.readouterr().err
    assert hub.calls == [] and not (tmp_path / "a" / "done.json").exists()
