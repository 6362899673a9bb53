"""Downloads against a loopback HTTP server (no network): official layout, idempotence, md5, HTTP errors, and
refusal of malicious archives with nothing written outside the target."""

from __future__ import annotations

import hashlib
import http.server
import io
import shutil
import tarfile
import threading
import uuid
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from fgvlm.data import create_dataset
from fgvlm.data.download import EXTRACTED_MARKER, DownloadError, UnsafeArchiveError, download_file, safe_extract
from fgvlm.data.flowers102 import download_flowers102

# Two real mini images per official split.
SPLIT_IDS = {"trnid": [2, 17], "valid": [28, 74], "tstid": [94, 144]}


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


class CountingHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the files of ``served/``; every request is recorded on the server."""

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        self.server.requests.append(self.path)
        super().do_GET()


@pytest.fixture()
def server(tmp_path):
    """A loopback HTTP server over ``tmp_path/served``; yields (base_url, served_dir, requests)."""
    served = tmp_path / "served"
    served.mkdir()

    def handler(*args, **kwargs):
        return CountingHandler(*args, directory=str(served), **kwargs)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.requests = []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/", served, httpd.requests
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture()
def flowers_files(server, flowers_mini):
    """The three official file names served with small real content; yields (base_url, md5 table, requests)."""
    base_url, served, requests = server
    with tarfile.open(served / "102flowers.tgz", "w:gz") as tar:
        for image_id in sorted(i for ids in SPLIT_IDS.values() for i in ids):
            name = f"image_{image_id:05d}.jpg"
            tar.add(flowers_mini / "jpg" / name, arcname=f"jpg/{name}")
    shutil.copy(flowers_mini / "imagelabels.mat", served / "imagelabels.mat")
    scipy.io.savemat(served / "setid.mat", {k: np.array([v], dtype=np.uint16) for k, v in SPLIT_IDS.items()})
    table = {name: md5(served / name) for name in ("102flowers.tgz", "imagelabels.mat", "setid.mat")}
    return base_url, table, requests


def test_download_lands_in_official_layout_and_second_run_fetches_nothing(tmp_path, flowers_files):
    base_url, table, requests = flowers_files
    root = tmp_path / "flowers"
    root.mkdir()
    (root / "setid.mat.part").write_bytes(b"left over from an interrupted run")
    (root / "imagelabels.mat").write_bytes(b"stale content with the wrong md5")

    summary = download_flowers102(root, base_url, files=table, progress=False)
    assert sorted(summary["downloaded"]) == sorted(table) and summary["extracted"]
    assert len(requests) == 3
    assert sorted(p.name for p in (root / "jpg").glob("*.jpg")) == [
        f"image_{i:05d}.jpg" for i in sorted(i for ids in SPLIT_IDS.values() for i in ids)
    ]
    assert not list(root.glob("*.part"))
    assert md5(root / "imagelabels.mat") == table["imagelabels.mat"]

    ds = create_dataset(dataset="flowers102", root=str(root))
    assert ds.split_sizes() == {"train": 2, "val": 2, "test": 2}
    sample = ds.split("train")[0]
    assert sample.id == "00002" and sample.image.size[0] > 0

    again = download_flowers102(root, base_url, files=table, progress=False)
    assert len(requests) == 3, f"second run made requests: {requests[3:]}"
    assert sorted(again["skipped"]) == sorted(table) and not again["extracted"]

    # A deleted image makes the extraction incomplete: the archive (still on disk, md5 fine) is re-extracted.
    (root / "jpg" / "image_00094.jpg").unlink()
    third = download_flowers102(root, base_url, files=table, progress=False)
    assert third["extracted"] and (root / "jpg" / "image_00094.jpg").is_file() and len(requests) == 3


def test_base_url_from_environment_and_http_404_names_the_url(tmp_path, server, monkeypatch):
    base_url, _, requests = server
    monkeypatch.setenv("FGVLM_FLOWERS102_URL", base_url + "mirror")
    with pytest.raises(DownloadError) as err:
        download_flowers102(tmp_path / "root", progress=False)
    message = str(err.value)
    assert "404" in message and f"{base_url}mirror/102flowers.tgz" in message
    assert requests == ["/mirror/102flowers.tgz"]
    assert not (tmp_path / "root" / "102flowers.tgz").exists()
    assert not (tmp_path / "root" / "102flowers.tgz.part").exists()


def test_wrong_md5_is_reported_and_nothing_left_as_complete(tmp_path, server):
    base_url, served, _ = server
    (served / "setid.mat").write_bytes(b"not the real file")
    actual = hashlib.md5(b"not the real file").hexdigest()
    dest = tmp_path / "setid.mat"
    with pytest.raises(DownloadError) as err:
        download_file(base_url + "setid.mat", dest, md5="a5357ecc9cb78c4bef273ce3793fc85c", progress=False)
    message = str(err.value)
    assert "setid.mat" in message and "a5357ecc9cb78c4bef273ce3793fc85c" in message and actual in message
    assert not dest.exists() and not (tmp_path / "setid.mat.part").exists()
    # With the right md5 the same file is fetched once, then recognised as complete.
    assert download_file(base_url + "setid.mat", dest, md5=actual, progress=True)
    assert not download_file(base_url + "setid.mat", dest, md5=actual, progress=False)


def build_tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


OUTSIDE = f"/tmp/fgvlm-evil-{uuid.uuid4().hex}"
MALICIOUS = {
    "traversal": ([(member("jpg/../../evil"), b"x")], "jpg/../../evil", "'..'"),
    "absolute": ([(member(OUTSIDE), b"x")], OUTSIDE, "absolute path"),
    "symlink-out": ([(member("jpg/link", tarfile.SYMTYPE, "../../outside"), None)], "jpg/link", "symlink"),
    "symlink-absolute": ([(member("jpg/link", tarfile.SYMTYPE, OUTSIDE), None)], "jpg/link", "absolute path"),
    "hardlink-out": ([(member("jpg/hard", tarfile.LNKTYPE, "../evil"), None)], "jpg/hard", "hardlink"),
    "symlink-chain": (
        [(member("a", tarfile.SYMTYPE, "."), None), (member("b", tarfile.SYMTYPE, "a/.."), None)],
        "b",
        "passes through the symlink member 'a'",
    ),
    "write-through-symlink": (
        [(member("d", tarfile.SYMTYPE, "sub"), None), (member("d/../../evil"), b"x")],
        "d/../../evil",
        "passes through the symlink member 'd'",
    ),
    "device": ([(member("jpg/tty", tarfile.CHRTYPE), None)], "jpg/tty", "device file"),
}


@pytest.mark.parametrize("case", sorted(MALICIOUS))
def test_malicious_archive_is_refused_with_the_member_named(tmp_path, case):
    members, bad_name, reason = MALICIOUS[case]
    # A harmless first member proves that checks run before anything is written.
    archive = build_tar(tmp_path / "evil.tgz", [(member("jpg/image_00001.jpg"), b"jpeg")] + members)
    target = tmp_path / "box" / "root"
    with pytest.raises(UnsafeArchiveError) as err:
        safe_extract(archive, target, progress=False)
    assert repr(bad_name) in str(err.value) and reason in str(err.value)
    assert not target.exists() or not any(target.rglob("*"))
    assert not (tmp_path / "box" / "evil").exists() and not (tmp_path / "evil").exists()
    assert not Path(OUTSIDE).exists()


def test_links_inside_the_target_are_allowed(tmp_path):
    archive = build_tar(
        tmp_path / "ok.tgz",
        [
            (member("jpg/image_00001.jpg"), b"jpeg"),
            (member("jpg/latest.jpg", tarfile.SYMTYPE, "image_00001.jpg"), None),
            (member("copy.jpg", tarfile.LNKTYPE, "jpg/image_00001.jpg"), None),
        ],
    )
    files = safe_extract(archive, tmp_path / "out", progress=False)
    assert files == ["jpg/image_00001.jpg"]
    assert (tmp_path / "out" / "jpg" / "latest.jpg").read_bytes() == b"jpeg"
    assert (tmp_path / "out" / "copy.jpg").read_bytes() == b"jpeg"


def test_malicious_archive_from_the_server_is_refused_and_not_marked_extracted(tmp_path, server, flowers_mini):
    base_url, served, _ = server
    build_tar(served / "102flowers.tgz", [(member("../evil"), b"x")])
    table = {"102flowers.tgz": md5(served / "102flowers.tgz")}
    root = tmp_path / "root"
    with pytest.raises(UnsafeArchiveError, match="'../evil'"):
        download_flowers102(root, base_url, files=table, progress=False)
    assert not (tmp_path / "evil").exists() and not (root / "jpg" / EXTRACTED_MARKER).exists()


def test_cli_download_reports_http_error_in_one_line(tmp_path, server, capsys):
    from fgvlm.cli import main

    base_url, _, _ = server
    with pytest.raises(SystemExit) as exit_:
        main(["data", "download", "flowers102", "--root", str(tmp_path), "--base-url", base_url + "nothing/"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "HTTP 404" in err and f"{base_url}nothing/102flowers.tgz" in err
