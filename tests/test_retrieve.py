"""dlmanager.retrieve(): one call that downloads a URL into the user's cache and returns its path.

Its names (:func:`~dlmanager.cache.cache_fname`), where the cache lives and
how big it may grow (the environment), revalidation, the fallback on the copy
when the server cannot be reached, and one transfer for threads and processes
asking at once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
import re
import sys
import textwrap
import threading
import warnings

import pytest

import dlmanager
from dlmanager import (
    ChecksumError,
    DownloadError,
    DownloadEvent,
    EventKind,
    HTTPStatusError,
    OfflineWarning,
    RetryPolicy,
    TransferError,
    retrieve,
)
from dlmanager.cache import CACHE_DIR_VARIABLE, CACHE_MAX_SIZE_VARIABLE, cache_fname
from tests.conftest import listing, read, start_python
from tests.server import FaultServer, Resource, make_data

DATA = make_data(100_000, seed=1)
NEW = make_data(120_000, seed=2)
SHA256 = "sha256:" + hashlib.sha256(DATA).hexdigest()
WAIT = 30  # seconds a thread waits for another one, at most (a hang fails, never a slow run)


@pytest.fixture(autouse=True)
def cache(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    """The default cache of every test: a temporary directory, without a size limit."""
    directory = tmp_path / "cache"
    monkeypatch.setenv(CACHE_DIR_VARIABLE, str(directory))
    monkeypatch.delenv(CACHE_MAX_SIZE_VARIABLE, raising=False)
    return directory


@pytest.fixture
def url(server: FaultServer) -> str:
    server.add("/data.zip", Resource(DATA))
    return server.url("/data.zip")


def gets(server: FaultServer, path: str = "/data.zip") -> int:
    return sum(request.method == "GET" for request in server.requests_for(path))


# --- names --------------------------------------------------------------------------------------


def test_the_default_name_is_a_hash_of_the_url_then_its_name(url: str, cache: pathlib.Path) -> None:
    path = retrieve(url)

    assert isinstance(path, pathlib.Path)
    assert path.is_absolute()
    assert path.parent == cache
    assert re.fullmatch(r"[0-9a-f]{16}-data\.zip", path.name)
    assert path.name == cache_fname(url)
    assert read(str(path)) == DATA
    assert listing(str(cache)) == [path.name]


def test_two_urls_whose_paths_end_alike_get_two_files(server: FaultServer) -> None:
    a, b = make_data(10_000, seed=3), make_data(10_000, seed=4)
    server.add("/a/data.zip", a)
    server.add("/b/data.zip", b)

    path_a = retrieve(server.url("/a/data.zip"))
    path_b = retrieve(server.url("/b/data.zip"))

    assert path_a != path_b
    assert path_a.name.endswith("-data.zip") and path_b.name.endswith("-data.zip")
    assert read(str(path_a)) == a
    assert read(str(path_b)) == b


def test_cache_fname_counts_the_query_but_not_credentials_or_fragment() -> None:
    name = cache_fname("https://example.org/d/data.zip?v=1")

    assert cache_fname("https://example.org/d/data.zip?v=2") != name
    assert cache_fname("https://example.org/other/data.zip?v=1") != name
    assert cache_fname("https://example.com/d/data.zip?v=1") != name
    assert cache_fname("https://user:secret@example.org/d/data.zip?v=1") == name
    assert cache_fname("https://example.org/d/data.zip?v=1#part") == name


def test_cache_fname_of_a_url_without_a_name_is_the_hash_alone() -> None:
    assert re.fullmatch(r"[0-9a-f]{16}", cache_fname("https://example.org/"))
    assert re.fullmatch(r"[0-9a-f]{16}", cache_fname("https://example.org/dir/?q=1"))
    assert re.fullmatch(
        r"[0-9a-f]{16}-déjà vu", cache_fname("https://example.org/d%C3%A9j%C3%A0%20vu")
    )


def test_cache_fname_keeps_the_end_of_a_long_name() -> None:
    name = cache_fname("https://example.org/" + "é" * 300 + ".tar.gz")

    assert name.endswith("é.tar.gz")
    assert len(os.fsencode(name)) <= 16 + 1 + 100


def test_fname_overrides_the_name(url: str, cache: pathlib.Path) -> None:
    path = retrieve(url, fname="mine.zip")

    assert path == cache / "mine.zip"
    assert read(str(path)) == DATA


@pytest.mark.parametrize("fname", ["../escape.zip", "/etc/passwd", "sub/data.zip", ".."])
def test_a_fname_outside_the_cache_is_refused(url: str, cache: pathlib.Path, fname: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(fname))):
        retrieve(url, fname=fname)
    assert not cache.exists()


# --- where the cache is, how big it grows -------------------------------------------------------


def test_the_cache_is_dlmanager_cache_dir_created_with_its_parents(
    url: str, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chosen = tmp_path / "deep" / "er" / "cache"
    monkeypatch.setenv(CACHE_DIR_VARIABLE, str(chosen))

    assert retrieve(url).parent == chosen


@pytest.mark.skipif(sys.platform != "linux", reason="platformdirs reads XDG_CACHE_HOME on Linux")
def test_without_dlmanager_cache_dir_the_cache_is_under_xdg_cache_home(
    url: str, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(CACHE_DIR_VARIABLE)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))

    assert retrieve(url).parent == tmp_path / "xdg" / "dlmanager"


def test_cache_dir_wins_and_a_relative_one_gives_an_absolute_path(
    url: str, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, cache: pathlib.Path
) -> None:
    monkeypatch.chdir(tmp_path)

    path = retrieve(url, cache_dir="mine")

    assert path.parent == tmp_path / "mine"
    assert path.is_absolute()
    assert not cache.exists()


def test_the_size_limit_evicts_older_files_and_keeps_the_one_retrieved(
    server: FaultServer, monkeypatch: pytest.MonkeyPatch, cache: pathlib.Path
) -> None:
    monkeypatch.setenv(CACHE_MAX_SIZE_VARIABLE, "150000")
    files = {f"/f{i}.bin": make_data(100_000, seed=10 + i) for i in range(3)}
    for name, data in files.items():
        server.add(name, data)

    paths = [retrieve(server.url(name)) for name in files]

    assert listing(str(cache)) == [paths[-1].name]
    assert read(str(paths[-1])) == files["/f2.bin"]


def test_a_file_bigger_than_the_size_limit_is_still_returned(
    url: str, monkeypatch: pytest.MonkeyPatch, cache: pathlib.Path
) -> None:
    monkeypatch.setenv(CACHE_MAX_SIZE_VARIABLE, "1k")

    path = retrieve(url)

    assert read(str(path)) == DATA
    assert listing(str(cache)) == [path.name]


def test_the_size_limit_never_removes_a_file_of_the_users_own(
    url: str, monkeypatch: pytest.MonkeyPatch, cache: pathlib.Path
) -> None:
    cache.mkdir()
    (cache / "notes.txt").write_bytes(b"mine" * 10_000)
    os.utime(cache / "notes.txt", (1_000_000_000, 1_000_000_000))  # the least recently used
    monkeypatch.setenv(CACHE_MAX_SIZE_VARIABLE, "1k")

    path = retrieve(url)

    assert sorted(listing(str(cache))) == sorted([path.name, "notes.txt"])


def test_a_file_being_returned_is_not_evicted_by_another_threads_download(
    server: FaultServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first file is published; before its retrieve() returns, a second one
    # is retrieved in another thread, whose eviction would take the first
    # (older, over the limit) but for its being returned.
    monkeypatch.setenv(CACHE_MAX_SIZE_VARIABLE, "150000")
    server.add("/first.bin", make_data(100_000, seed=5))
    server.add("/second.bin", make_data(100_000, seed=6))
    published, second_done = threading.Event(), threading.Event()
    results: list[pathlib.Path] = []

    def hold(event: DownloadEvent) -> None:
        if event.kind is EventKind.FINISHED:
            published.set()
            second_done.wait(WAIT)

    first = threading.Thread(
        target=lambda: results.append(retrieve(server.url("/first.bin"), on_event=hold))
    )
    first.start()
    try:
        assert published.wait(WAIT)
        second = retrieve(server.url("/second.bin"))
    finally:
        second_done.set()
        first.join(WAIT)

    assert read(str(results[0])) == make_data(100_000, seed=5)
    assert gets(server, "/first.bin") == 1  # not evicted, then downloaded again
    assert read(str(second)) == make_data(100_000, seed=6)


def test_a_file_removed_before_it_is_returned_is_downloaded_again(
    url: str, server: FaultServer
) -> None:
    # As another process evicting it would, between its download and the return.
    removals = 0

    def remove_once(event: DownloadEvent) -> None:
        nonlocal removals
        if event.kind is EventKind.FINISHED and event.error is None and not removals:
            os.remove(event.download.get_dest())
            removals += 1

    path = retrieve(url, on_event=remove_once)

    assert read(str(path)) == DATA
    assert gets(server) == 2


def test_a_file_removed_each_time_it_is_downloaded_is_an_error(
    url: str, server: FaultServer
) -> None:
    def remove(event: DownloadEvent) -> None:
        if event.kind is EventKind.FINISHED and event.error is None:
            os.remove(event.download.get_dest())

    with pytest.raises(FileNotFoundError, match="removed 3 times right after it was downloaded"):
        retrieve(url, on_event=remove)
    assert gets(server) == 3


def test_an_invalid_size_limit_is_a_clear_error(
    url: str, server: FaultServer, monkeypatch: pytest.MonkeyPatch, cache: pathlib.Path
) -> None:
    monkeypatch.setenv(CACHE_MAX_SIZE_VARIABLE, "lots")

    with pytest.raises(ValueError, match=f"^{CACHE_MAX_SIZE_VARIABLE}: .*'lots'"):
        retrieve(url)
    assert server.requests == []
    assert not cache.exists()


# --- checksums, revalidation --------------------------------------------------------------------


def test_a_checksum_is_verified(url: str) -> None:
    wrong = "sha256:" + "0" * 64

    with pytest.raises(ChecksumError):
        retrieve(url, wrong)
    path = retrieve(url, SHA256)
    assert read(str(path)) == DATA


def test_a_copy_that_does_not_match_the_checksum_is_downloaded_again(
    url: str, server: FaultServer
) -> None:
    path = retrieve(url, SHA256)
    path.write_bytes(make_data(len(DATA), seed=99))  # damaged in the cache

    assert retrieve(url) == path  # without a checksum, the copy is used as it is
    assert gets(server) == 1
    assert retrieve(url, SHA256) == path
    assert read(str(path)) == DATA
    assert gets(server) == 2


def test_a_wrong_checksum_leaves_the_good_copy(url: str, server: FaultServer) -> None:
    path = retrieve(url, SHA256)

    with pytest.raises(ChecksumError, match="left as it was"):
        retrieve(url, "sha256:" + "0" * 64)
    assert read(str(path)) == DATA


def test_revalidate_gets_a_changed_file(url: str, server: FaultServer) -> None:
    path = retrieve(url)
    server.resource("/data.zip").data = NEW
    server.resource("/data.zip").etag = '"new"'

    assert retrieve(url) == path  # without revalidate: the copy, no request
    assert gets(server) == 1
    assert retrieve(url, revalidate=True) == path
    assert read(str(path)) == NEW
    assert gets(server) == 2


def test_max_age_makes_no_request_for_a_recent_copy(url: str, server: FaultServer) -> None:
    path = retrieve(url)

    assert retrieve(url, max_age=3600) == path
    assert gets(server) == 1
    assert retrieve(url, max_age=0) == path  # too old: revalidated (a 304)
    assert gets(server) == 2
    assert read(str(path)) == DATA


# --- offline ------------------------------------------------------------------------------------


def test_offline_the_copy_is_returned_with_a_warning(
    url: str, server: FaultServer, fast_retry: RetryPolicy
) -> None:
    path = retrieve(url)
    server.stop()

    with pytest.warns(OfflineWarning) as caught:
        assert retrieve(url, revalidate=True, retry=fast_retry) == path

    assert read(str(path)) == DATA
    [warning] = caught.list
    assert isinstance(warning.message, OfflineWarning)
    assert warning.message.url == url
    assert warning.message.path == path
    assert isinstance(warning.message.error, TransferError)
    assert url in str(warning.message) and str(path) in str(warning.message)
    assert warning.filename == __file__  # the caller's line


def test_a_server_error_after_the_retries_counts_as_offline(
    url: str, server: FaultServer, fast_retry: RetryPolicy
) -> None:
    path = retrieve(url)
    server.resource("/data.zip").statuses = [503] * 10

    with pytest.warns(OfflineWarning, match="503"):
        retrieve(url, max_age=0, retry=dataclasses.replace(fast_retry, total=2))
    assert read(str(path)) == DATA


def test_a_missing_file_is_not_offline(url: str, server: FaultServer) -> None:
    path = retrieve(url)
    server.resource("/data.zip").statuses = [404]

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(HTTPStatusError, match="404"):
            retrieve(url, revalidate=True)
    assert read(str(path)) == DATA  # left as it was


def test_offline_without_a_copy_raises(
    url: str, server: FaultServer, cache: pathlib.Path, fast_retry: RetryPolicy
) -> None:
    server.stop()

    with pytest.raises(TransferError):
        retrieve(url, revalidate=True, retry=fast_retry)
    assert listing(str(cache)) == []


def test_offline_a_copy_that_does_not_match_the_checksum_is_not_used(
    url: str, server: FaultServer, fast_retry: RetryPolicy
) -> None:
    path = retrieve(url)
    server.stop()
    other = "sha256:" + hashlib.sha256(b"another version").hexdigest()

    with pytest.raises(DownloadError):
        retrieve(url, other, revalidate=True, retry=fast_retry)
    assert read(str(path)) == DATA


# --- options ------------------------------------------------------------------------------------


def test_an_unknown_keyword_is_a_type_error_naming_it(url: str, cache: pathlib.Path) -> None:
    options: dict[str, object] = {"persist_limit": None}

    with pytest.raises(TypeError, match="persist_limit"):
        retrieve(url, **options)  # type: ignore[arg-type]
    assert not cache.exists()


def test_download_options_reach_the_download(url: str, server: FaultServer) -> None:
    seen: list[tuple[int, int]] = []

    with pytest.raises(dlmanager.TooLargeError):
        retrieve(url, max_size=1000)
    retrieve(url, progress=lambda _, current, total: seen.append((current, total)), chunk_size=4096)
    assert seen[-1] == (len(DATA), len(DATA))


# --- threads and processes ----------------------------------------------------------------------


def test_threads_retrieving_one_url_at_once_make_one_download(server: FaultServer) -> None:
    server.add("/slow.bin", Resource(DATA, trickle=(10_000, 0.01)))
    url = server.url("/slow.bin")
    start = threading.Barrier(8)
    paths: list[pathlib.Path] = []

    def worker() -> None:
        start.wait(WAIT)
        paths.append(retrieve(url, SHA256))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT * 2)

    assert len(paths) == 8 and len(set(paths)) == 1
    assert read(str(paths[0])) == DATA
    assert gets(server, "/slow.bin") == 1


RETRIEVER = textwrap.dedent(
    """
    import sys
    import dlmanager
    print(dlmanager.retrieve(sys.argv[1]))
    """
)


def test_processes_retrieving_one_url_at_once_make_one_download(
    server: FaultServer, cache: pathlib.Path
) -> None:
    server.add("/slow.bin", Resource(DATA, trickle=(10_000, 0.02)))
    children = [start_python(["-c", RETRIEVER, server.url("/slow.bin")]) for _ in range(2)]
    outputs = []
    for child in children:
        out, err = child.communicate(timeout=60)
        assert child.returncode == 0, err
        outputs.append(out.strip())

    assert outputs[0] == outputs[1]
    assert pathlib.Path(outputs[0]).parent == cache
    assert read(outputs[0]) == DATA
    assert gets(server, "/slow.bin") == 1


def test_retrieve_leaves_no_thread_running(
    url: str, server: FaultServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CACHE_MAX_SIZE_VARIABLE, "1G")  # a limit follows the directory live
    before = set(threading.enumerate())

    retrieve(url)

    assert set(threading.enumerate()) - before == set()


def test_the_users_own_files_do_not_count_toward_the_size_limit(
    server: FaultServer, cache: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache.mkdir()
    (cache / "mine.bin").write_bytes(b"m" * 100_000)
    server.add("/a.bin", make_data(30_000, seed=1))
    server.add("/b.bin", make_data(30_000, seed=2))
    monkeypatch.setenv(CACHE_MAX_SIZE_VARIABLE, "70000")

    first = retrieve(server.url("/a.bin"))
    second = retrieve(server.url("/b.bin"))

    # 60,000 bytes of dlmanager's own: under the cap, whatever the user keeps there.
    assert sorted(listing(str(cache))) == sorted([first.name, second.name, "mine.bin"])
