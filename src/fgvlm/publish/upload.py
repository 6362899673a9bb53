"""The one place fgvlm talks to the Hub: ``huggingface_hub.HfApi``'s ``create_repo``, ``create_branch``,
``list_repo_commits`` and ``upload_folder``.

One staged folder becomes ONE commit whose title names the content hash. Before uploading, the branch's commits are
searched for that title: an earlier attempt whose commit was made (even if its answer was lost) is found and not
made twice; files the Hub already stores (large files are content-addressed) are not sent again. The token comes from
``HF_TOKEN`` or ``hf auth login``, as ``huggingface_hub`` reads them; any network, permission or Hub error becomes one
line (``PublishError``) and nothing is recorded as published.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fgvlm.publish.sources import PublishError

HUB = "https://huggingface.co"


def repo_url(repo_id: str, repo_type: str) -> str:
    return f"{HUB}/{'datasets/' if repo_type == 'dataset' else ''}{repo_id}"


def check_can_upload() -> None:
    """Fail before any request when uploads cannot work: offline mode, or no token anywhere."""
    from huggingface_hub import get_token

    from fgvlm.models.loading import hub_offline

    if hub_offline():
        raise PublishError("HF_HUB_OFFLINE=1 is set: uploading needs the Hub; unset it, or use --dry-run")
    if get_token() is None:
        raise PublishError(
            "no Hugging Face token: set HF_TOKEN in the environment or run `hf auth login` (a token with write access)"
        )


def _one_line(err: BaseException) -> str:
    """The error's kind and first line, with the HTTP status when there is one."""
    response = getattr(err, "response", None)
    status = getattr(response, "status_code", None)
    first = (str(err).strip().splitlines() or [type(err).__name__])[0]
    hint = ""
    if status in (401, 403):
        hint = " (check that the token has write access to this namespace)"
    return f"{type(err).__name__}{f' {status}' if status else ''}: {first}{hint}"


def hub_errors() -> tuple[type[BaseException], ...]:
    """What a Hub call raises on network, permission or server trouble (not programming errors)."""
    from huggingface_hub.errors import HfHubHTTPError

    try:
        from httpx2 import HTTPError  # the transport huggingface_hub uses
    except ImportError:  # older huggingface_hub releases use requests; its errors are OSErrors
        return (HfHubHTTPError, OSError, ValueError)
    return (HfHubHTTPError, HTTPError, OSError, ValueError)


def find_commit(api: Any, repo_id: str, repo_type: str, revision: str | None, title: str) -> Any | None:
    """The branch's commit titled ``title`` (an earlier attempt's), or None."""
    for commit in api.list_repo_commits(repo_id, repo_type=repo_type, revision=revision):
        if commit.title == title:
            return commit
    return None


def upload(
    folder: Path,
    *,
    repo_id: str,
    repo_type: str,
    private: bool,
    revision: str | None,
    message: str,
    description: str = "",
) -> dict[str, Any]:
    """Create the repository (and branch) if needed and commit ``folder`` once; returns ``{"oid", "url", "made"}``.

    ``made`` is False when the commit was already there (a second attempt after a lost answer).
    """
    from huggingface_hub import HfApi

    check_can_upload()
    api = HfApi()
    where = f"{repo_type} repository {repo_id}" + (f" (branch {revision})" if revision else "")
    try:
        api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
        if revision:
            api.create_branch(repo_id, branch=revision, repo_type=repo_type, exist_ok=True)
        existing = find_commit(api, repo_id, repo_type, revision, message)
        if existing is not None:
            url = f"{repo_url(repo_id, repo_type)}/commit/{existing.commit_id}"
            return {"oid": existing.commit_id, "url": url, "made": False}
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder),
            repo_type=repo_type,
            revision=revision,
            commit_message=message,
            commit_description=description,
        )
    except hub_errors() as err:
        raise PublishError(
            f"upload to the {where} failed ({_one_line(err)}); nothing was published. Run the same command again "
            "to resume."
        ) from err
    if not getattr(info, "oid", None):
        raise PublishError(f"upload to the {where} returned no commit; nothing is recorded as published")
    return {"oid": info.oid, "url": info.commit_url, "made": True}
