"""Metadata kept with each file, and revalidation, against a loopback server whose file changes."""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import os
import pathlib
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from dlmanager import (
    Download,
    DownloadManager,
    FileInfo,
    HTTPStatusError,
    PersistLimit,
    RetryPolicy,
)
from dlmanager.disk import metadata
from dlmanager.disk.metadata import ORIGIN_ATTR, read_info, sidecar_path
from tests.conftest import (
    SUBPROCESS_TIMEOUT,
    listing,
    read,
    refuse_xattrs,
    start_python,
    xattrs_work,
)
from tests.loopback import BackgroundServer, LoopbackHandler
from tests.server import (
    CHANGED_LAST_MODIFIED,
    DEFAULT_LAST_MODIFIED,
    FaultServer,
    Resource,
    make_data,
    strong_etag,
)

OLD = make_data(50_000, seed=1)
NEW = make_data(60_000, seed=2)
SHA256_OLD = "sha256:" + hashlib.sha256(OLD).hexdigest()


def changing(server: FaultServer, path: str = "/f.bin", **faults: object) -> Resource:
    return server.add(path, Resource(OLD, **faults))  # type: ignore[arg-type]


def change(resource: Resource) -> None:
    resource.data = NEW
    resource.etag = strong_etag(NEW)
    resource.last_modified = CHANGED_LAST_MODIFIED


def fetch(manager: DownloadManager, url: str, fname: str | None = None) -> None:
    """Download *url* with *manager*, to the end (a plain download)."""
    manager.download(url, fname)
    manager.wait()


def revalidate(manager: DownloadManager, url: str, **options: Any) -> Download:
    """Revalidate the file of *url* with *manager*, to the end; its download."""
    download = manager.download(url, revalidate=True, **options)
    assert download is not None
    download.wait()
    return download


def methods(server: FaultServer, path: str = "/f.bin") -> list[tuple[str, dict[str, str]]]:
    return [(r.method, r.headers) for r in server.requests_for(path)]


def test_a_published_file_carries_its_metadata(
    server: FaultServer, destdir: str, storage: str
) -> None:
    changing(server)
    server.redirect("/moved", "/f.bin")
    url = server.url("/moved").replace("http://", "http://user:secret@")
    before = metadata.utcnow()
    with DownloadManager(destdir) as manager:
        manager.download(url, "f.bin", checksum="sha256:" + hashlib.sha256(OLD).hexdigest())
        manager.wait()
        info = manager.info("f.bin")
    assert isinstance(info, FileInfo)
    assert info.url == server.url("/moved")  # credentials stripped
    assert info.final_url == server.url("/f.bin")
    assert info.etag == strong_etag(OLD)
    assert info.last_modified == DEFAULT_LAST_MODIFIED
    assert info.size == len(OLD)
    assert info.checksum == SHA256_OLD
    assert before <= info.downloaded_at == info.validated_at <= metadata.utcnow()
    path = os.path.join(destdir, "f.bin")
    if storage == "xattrs":
        assert os.getxattr(path, ORIGIN_ATTR) == server.url("/moved").encode()
        assert listing(destdir) == ["f.bin"]  # nothing beside the file
    else:
        assert listing(destdir) == [".f.bin.dlmanager.json", "f.bin"]


def test_info_is_none_for_a_file_dlmanager_did_not_download(destdir: str, storage: str) -> None:
    with open(os.path.join(destdir, "mine.txt"), "w") as handle:
        handle.write("a user's own file")
    with DownloadManager(destdir) as manager:
        assert manager.info("mine.txt") is None
        assert manager.info("absent") is None
        with pytest.raises(ValueError):
            manager.info("../escape")


def test_a_changed_file_gets_no_stale_metadata(
    server: FaultServer, destdir: str, storage: str
) -> None:
    changing(server)
    with DownloadManager(destdir) as manager:
        fetch(manager, server.url("/f.bin"))
        with open(os.path.join(destdir, "f.bin"), "ab") as handle:
            handle.write(b"edited by hand")
        assert manager.info("f.bin") is None


def test_revalidating_an_unchanged_file_costs_one_304_and_no_body(
    server: FaultServer, destdir: str, storage: str
) -> None:
    changing(server)
    with DownloadManager(destdir) as manager:
        fetch(manager, server.url("/f.bin"))
        first = manager.info("f.bin")
        sent = server.bytes_sent
        inode = os.stat(os.path.join(destdir, "f.bin")).st_ino
        time.sleep(0.01)
        download = revalidate(manager, server.url("/f.bin"))
        assert download.not_modified
        second = manager.info("f.bin")
    requests = methods(server)
    assert len(requests) == 2
    assert requests[1][1].get("if-none-match") == strong_etag(OLD)
    assert server.bytes_sent - sent < 1000  # headers only
    assert os.stat(os.path.join(destdir, "f.bin")).st_ino == inode  # the very same file
    assert first is not None and second is not None
    assert second.validated_at > first.validated_at
    assert second.downloaded_at == first.downloaded_at


def test_revalidating_a_changed_file_gets_the_new_version_in_one_request(
    server: FaultServer, destdir: str, storage: str
) -> None:
    resource = changing(server)
    with DownloadManager(destdir) as manager:
        fetch(manager, server.url("/f.bin"))
        change(resource)
        download = revalidate(manager, server.url("/f.bin"))
        assert not download.not_modified
        info = manager.info("f.bin")
    assert read(os.path.join(destdir, "f.bin")) == NEW
    assert len(methods(server)) == 2
    assert info is not None and info.etag == strong_etag(NEW) and info.size == len(NEW)
    assert info.last_modified == CHANGED_LAST_MODIFIED


def test_without_revalidate_a_changed_file_is_skipped(server: FaultServer, destdir: str) -> None:
    resource = changing(server)
    with DownloadManager(destdir) as manager:
        fetch(manager, server.url("/f.bin"))
        change(resource)
        assert manager.download(server.url("/f.bin")) is None  # 0.1.1: already there
    assert read(os.path.join(destdir, "f.bin")) == OLD
    assert len(methods(server)) == 1


def test_max_age_makes_no_request_for_a_fresh_file(
    server: FaultServer, destdir: str, storage: str
) -> None:
    resource = changing(server)
    with DownloadManager(destdir) as manager:
        fetch(manager, server.url("/f.bin"))
        change(resource)
        assert manager.download(server.url("/f.bin"), max_age=3600) is None
        assert manager.download(server.url("/f.bin"), revalidate=True, max_age=3600) is None
        assert len(methods(server)) == 1
        # Too old: revalidated (max_age alone turns revalidation on).
        download = manager.download(server.url("/f.bin"), max_age=0)
        assert download is not None
        download.wait()
    assert read(os.path.join(destdir, "f.bin")) == NEW
    assert len(methods(server)) == 2


def test_a_failed_revalidation_leaves_the_old_file_as_it_was(
    server: FaultServer, destdir: str, storage: str, fast_retry: RetryPolicy
) -> None:
    resource = changing(server)
    with DownloadManager(destdir, retry=dataclasses.replace(fast_retry, total=1)) as manager:
        fetch(manager, server.url("/f.bin"))
        before = manager.info("f.bin")
        change(resource)
        resource.statuses = [503, 503, 503]
        download = manager.download(server.url("/f.bin"), revalidate=True)
        assert download is not None
        with pytest.raises(HTTPStatusError) as raised:
            download.wait()
        assert "left as it was" in str(raised.value)
        assert manager.info("f.bin") == before
    assert read(os.path.join(destdir, "f.bin")) == OLD
    assert sorted(listing(destdir)) == (
        ["f.bin"] if storage == "xattrs" else [".f.bin.dlmanager.json", "f.bin"]
    )


def test_a_server_that_ignores_conditions_but_sends_the_same_etag_costs_no_body(
    server: FaultServer, destdir: str
) -> None:
    changing(server, ignore_conditions=True)
    with DownloadManager(destdir) as manager:
        fetch(manager, server.url("/f.bin"))
        download = revalidate(manager, server.url("/f.bin"))
        assert download.not_modified
    assert read(os.path.join(destdir, "f.bin")) == OLD


def test_without_validators_size_and_last_modified_decide(
    server: FaultServer, destdir: str
) -> None:
    resource = changing(server, etag=None)
    resource.last_modified = None
    with DownloadManager(destdir) as manager:
        fetch(manager, server.url("/f.bin"))
        info = manager.info("f.bin")
        assert info is not None and info.etag is None and info.last_modified is None
        # A Last-Modified older than the file's validation, same size: current.
        resource.last_modified = DEFAULT_LAST_MODIFIED
        download = revalidate(manager, server.url("/f.bin"))
        assert download.not_modified
        # Another size: downloaded again.
        resource.data = NEW
        download = revalidate(manager, server.url("/f.bin"))
        assert not download.not_modified
    assert read(os.path.join(destdir, "f.bin")) == NEW


def test_a_bare_download_revalidates_too(server: FaultServer, destdir: str, storage: str) -> None:
    resource = changing(server)
    dest = os.path.join(destdir, "f.bin")
    first = Download(server.url("/f.bin"), dest)
    first.start()
    first.wait()
    assert read_info(dest) is not None
    again = Download(server.url("/f.bin"), dest, revalidate=True)
    again.start()
    again.wait()
    assert again.not_modified
    change(resource)
    third = Download(server.url("/f.bin"), dest, revalidate=True)
    third.start()
    third.wait()
    assert not third.not_modified
    assert read(dest) == NEW


def test_a_checksum_wins_over_a_304(server: FaultServer, destdir: str) -> None:
    changing(server)
    with DownloadManager(destdir) as manager:
        fetch(manager, server.url("/f.bin"))
        with open(os.path.join(destdir, "f.bin"), "r+b") as handle:
            handle.write(b"X")  # damaged in place: same size
        download = manager.download(
            server.url("/f.bin"),
            checksum="sha256:" + hashlib.sha256(OLD).hexdigest(),
            revalidate=True,
        )
        assert download is not None
        download.wait()
        assert not download.not_modified
    assert read(os.path.join(destdir, "f.bin")) == OLD
    assert "if-none-match" not in methods(server)[-1][1]


def test_invalid_max_age_is_refused(server: FaultServer, destdir: str) -> None:
    with DownloadManager(destdir) as manager:
        for bad in (-1, "10", True):
            with pytest.raises(ValueError, match="max_age"):
                manager.download(server.url("/f.bin"), max_age=bad)  # type: ignore[arg-type]


def test_a_stale_sidecar_is_ignored(destdir: str) -> None:
    path = os.path.join(destdir, "f.bin")
    with open(path, "wb") as handle:
        handle.write(OLD)
    now = metadata.utcnow()
    info = FileInfo("http://h/f.bin", "http://h/f.bin", None, None, len(OLD), None, now, now)
    with open(sidecar_path(path), "wb") as handle:
        handle.write(metadata.encode(info, inode=os.stat(path).st_ino + 1))
    assert read_info(path) is None
    with open(sidecar_path(path), "wb") as handle:
        handle.write(metadata.encode(info, inode=os.stat(path).st_ino))
    assert read_info(path) == info


def test_file_info_age_and_json() -> None:
    then = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    info = FileInfo("u", "f", '"e"', None, 3, None, then, then)
    assert info.age(then + datetime.timedelta(seconds=90)) == 90
    assert info.as_json()["validated_at"] == "2026-01-01T00:00:00+00:00"


REVALIDATE = """
import sys
from dlmanager import DownloadManager
with DownloadManager(sys.argv[1]) as manager:
    download = manager.download(sys.argv[2], revalidate=True)
    print("started", flush=True)
    download.wait()
    print("not modified" if download.not_modified else "downloaded", download.done_by)
"""


def test_processes_revalidating_at_once_make_one_request(server: FaultServer, destdir: str) -> None:
    resource = changing(server)
    with DownloadManager(destdir) as manager:
        fetch(manager, server.url("/f.bin"))
    change(resource)
    resource.trickle = (4096, 0.05)  # the new version takes about a second
    children = [start_python(["-c", REVALIDATE, destdir, server.url("/f.bin")]) for _ in range(2)]
    outputs = [child.communicate(timeout=SUBPROCESS_TIMEOUT) for child in children]
    assert [child.returncode for child in children] == [0, 0], outputs
    gets = [request for request in server.requests_for("/f.bin") if request.method == "GET"]
    assert len(gets) == 2  # the first download, then one revalidation for both
    results = sorted(out.splitlines()[-1] for out, _ in outputs)
    assert results == ["downloaded None", "not modified another process"], outputs
    assert read(os.path.join(destdir, "f.bin")) == NEW
    info = read_info(os.path.join(destdir, "f.bin"))  # written by a child, read here
    assert info is not None and info.etag == strong_etag(NEW) and info.size == len(NEW)


@pytest.fixture
def no_xattr_dir(tmp_path: pathlib.Path) -> Iterator[str]:
    """A directory on a real filesystem without extended attributes (a ramfs
    mounted for the test, where the test may mount one)."""
    mount = tmp_path / "ramfs"
    mount.mkdir()
    try:
        done = subprocess.run(
            ["mount", "-t", "ramfs", "ramfs", str(mount)], capture_output=True, check=False
        )
    except OSError:
        pytest.skip("no mount command")
    if done.returncode:
        pytest.skip(f"cannot mount a ramfs here: {done.stderr.decode().strip()}")
    try:
        if xattrs_work(str(mount)):
            pytest.skip("this ramfs takes extended attributes")
        yield str(mount)
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_on_a_filesystem_without_xattrs_sidecars_keep_every_guarantee(
    server: FaultServer, no_xattr_dir: str
) -> None:
    resource = changing(server)
    limit = PersistLimit(len(OLD) + len(NEW), file_limit=1)
    with DownloadManager(no_xattr_dir, persist_limit=limit) as manager:
        fetch(manager, server.url("/f.bin"))
        assert sorted(listing(no_xattr_dir)) == [".f.bin.dlmanager.json", "f.bin"]
        info = manager.info("f.bin")
        assert info is not None and info.etag == strong_etag(OLD)
        download = revalidate(manager, server.url("/f.bin"))
        assert download.not_modified
        change(resource)
        download = revalidate(manager, server.url("/f.bin"))
        info = manager.info("f.bin")
        assert info is not None and info.etag == strong_etag(NEW)
        assert limit.total_size == len(NEW)  # the sidecar is not counted
    assert read(os.path.join(no_xattr_dir, "f.bin")) == NEW
    assert sorted(listing(no_xattr_dir)) == [".f.bin.dlmanager.json", "f.bin"]


def test_a_new_manager_removes_sidecars_that_describe_no_file(
    server: FaultServer, destdir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    refuse_xattrs(monkeypatch)
    changing(server)
    server.add("/g.bin", NEW)
    with DownloadManager(destdir) as manager:
        manager.download(server.url("/f.bin"))
        fetch(manager, server.url("/g.bin"))
    os.unlink(os.path.join(destdir, "f.bin"))  # the user removed it
    path = os.path.join(destdir, "g.bin")
    os.replace(path, path + ".tmp")  # replaced by another file of the same size
    with open(path + ".tmp", "rb") as old, open(path, "wb") as new:
        new.write(old.read())
    os.unlink(path + ".tmp")
    young = os.path.join(destdir, ".h.bin.dlmanager.json")
    with open(young, "wb") as handle:
        handle.write(b"{}")  # a publish in progress: too young to go
    old_time = time.time() - 60
    for name in (".f.bin.dlmanager.json", ".g.bin.dlmanager.json"):
        os.utime(os.path.join(destdir, name), (old_time, old_time))
    with DownloadManager(destdir) as manager:
        assert manager.info("g.bin") is None
    assert sorted(listing(destdir)) == [".h.bin.dlmanager.json", "g.bin"]


def test_a_url_too_long_for_an_attribute_goes_to_a_sidecar(
    server: FaultServer, destdir: str
) -> None:
    if not xattrs_work(destdir):
        pytest.skip("no user extended attributes on this filesystem")
    path = "/f.bin?token=" + "t" * 6000  # beyond one filesystem block of attributes
    server.add(path, OLD)
    server.add("/g.bin", NEW)
    with DownloadManager(destdir) as manager:
        manager.download(server.url(path), "f.bin")
        fetch(manager, server.url("/g.bin"))
        info = manager.info("f.bin")
        assert info is not None and info.url == server.url(path)
        assert manager.info("g.bin") is not None
    assert sorted(listing(destdir)) == [".f.bin.dlmanager.json", "f.bin", "g.bin"]


def test_a_304_counts_as_a_use_for_the_persist_limit(server: FaultServer, destdir: str) -> None:
    changing(server, "/a.bin")
    changing(server, "/b.bin")
    server.add("/c.bin", NEW)
    limit = PersistLimit(2 * len(OLD) + len(NEW) - 1, file_limit=1)
    with DownloadManager(destdir, persist_limit=limit, max_workers=1) as manager:
        for name in ("a.bin", "b.bin"):
            manager.download(server.url("/" + name))
            manager.wait()
        download = manager.download(server.url("/a.bin"), revalidate=True)
        assert download is not None
        download.wait()
        assert download.not_modified
        manager.download(server.url("/c.bin"))  # over the limit: the least recently used goes
        manager.wait()
    assert sorted(listing(destdir)) == ["a.bin", "c.bin"]


class _RemovingHandler(LoopbackHandler["RemovingServer"]):
    """Serves OLD; a conditional request removes the file it revalidates, then answers 304."""

    def serve(self) -> None:
        if self.headers.get("If-None-Match"):
            os.unlink(self.owner.path)
            self.send_page(304, {"ETag": strong_etag(OLD)})
            return
        self.send_response(200)
        self.send_header("ETag", strong_etag(OLD))
        self.send_header("Content-Length", str(len(OLD)))
        self.end_headers()
        self.send_body([OLD])


class RemovingServer(BackgroundServer):
    handler = _RemovingHandler

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path


def test_a_file_removed_while_it_is_revalidated_is_downloaded(destdir: str) -> None:
    path = os.path.join(destdir, "f.bin")
    with RemovingServer(path) as server, DownloadManager(destdir) as manager:
        fetch(manager, server.url("/f.bin"))
        download = revalidate(manager, server.url("/f.bin"))
        assert not download.not_modified
        assert [r.method for r in server.requests_for("/f.bin")] == ["GET"] * 3
    assert read(path) == OLD
