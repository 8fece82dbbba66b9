"""app.storage on both backends: S3 (moto's real HTTP server on loopback) and a local dir."""

from __future__ import annotations

import hashlib
import io
import socket
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask

from app.api.files import bp as files_bp
from app.config import Settings
from app.demo.sample import solid_png as make_png
from app.external import ExternalError
from app.storage import (
    EXTENSIONS,
    MULTIPART_BYTES,
    InvalidKey,
    LocalStorage,
    ObjectNotFound,
    ObjectTooLarge,
    S3Storage,
    Storage,
    StorageError,
    StorageUnavailable,
    StoredObject,
    build_storage,
    is_owned_key,
    job_video_key,
    library_key,
    make_s3_client,
    sniff_image_type,
)

MiB = 1024 * 1024
USER = "0190a1b2c3d4e5f60718293a4b5c6d7e"
OTHER = "0190a1b2c3d4e5f60718293a4b5c6d7f"
_PATTERN = bytes(range(251))  # a prime period: misplaced or dropped chunks change the bytes
_POOL = _PATTERN * (MULTIPART_BYTES // len(_PATTERN) + 2)


def s3_settings(endpoint: str, bucket: str = "videojobs-test") -> Settings:
    """Fake credentials in the client itself: nothing here can reach real AWS."""
    return Settings(s3_bucket=bucket, s3_endpoint_url=endpoint, s3_region="us-east-1",
                    aws_access_key_id="testing", aws_secret_access_key="testing")


def leftovers(storage: Storage) -> list[str]:
    """Everything the backend holds: files (temp files included), objects, open uploads."""
    if isinstance(storage, LocalStorage):
        root = storage.root
        files = [p for p in root.rglob("*") if p.is_file()]
        # A content-type sidecar belongs to its object; only an orphan one is a leftover.
        return sorted(str(p.relative_to(root)) for p in files
                      if not (p.name.endswith(".meta.json")
                              and p.with_name(p.name[1:-len(".meta.json")]).is_file()))
    assert isinstance(storage, S3Storage)
    objects = storage.client.list_objects_v2(Bucket=storage.bucket).get("Contents", [])
    uploads = storage.client.list_multipart_uploads(Bucket=storage.bucket).get("Uploads", [])
    return [o["Key"] for o in objects] + [f"upload:{u['Key']}" for u in uploads]


def in_flight(storage: Storage) -> int:
    """Partial state an upload in progress has created (temp files, multipart uploads)."""
    if isinstance(storage, LocalStorage):
        return sum(1 for p in storage.root.rglob("*.tmp"))
    assert isinstance(storage, S3Storage)
    uploads = storage.client.list_multipart_uploads(Bucket=storage.bucket)
    return len(uploads.get("Uploads", []))


class Source:
    """A stream generated on the fly; can fail at a position or run a probe there."""

    def __init__(self, size: int, fail_at: int | None = None,
                 probe_at: int | None = None, probe: Callable[[], None] | None = None) -> None:
        self.size = size
        self.pos = 0
        self.fail_at = fail_at
        self.probe_at = probe_at
        self.probe = probe
        self.digest = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        if self.probe is not None and self.probe_at is not None and self.pos >= self.probe_at:
            probe, self.probe = self.probe, None
            probe()
        if self.fail_at is not None and self.pos >= self.fail_at:
            raise ConnectionResetError("connection cut mid-stream")
        if n is None or n < 0:
            n = self.size - self.pos
        n = min(n, self.size - self.pos, len(_POOL) - len(_PATTERN))
        offset = self.pos % len(_PATTERN)
        data = _POOL[offset:offset + n]
        self.pos += n
        self.digest.update(data)
        return data


def read_all(storage: Storage, key: str) -> bytes:
    with storage.open_read(key) as body:
        return body.read()


def digest_of(storage: Storage, key: str) -> str:
    digest = hashlib.sha256()
    with storage.open_read(key) as body:
        while chunk := body.read(MiB):
            digest.update(chunk)
    return digest.hexdigest()


def files_app(storage: Any) -> Flask:
    app = Flask(__name__)
    app.register_blueprint(files_bp)
    app.extensions["videojobs.storage"] = storage
    return app


# --- round trip -----------------------------------------------------------------------------


def test_put_head_read_delete_roundtrip(storage: Storage) -> None:
    key = library_key(USER, "png")
    data = make_png()
    stored = storage.put_stream(key, io.BytesIO(data), "image/png")
    assert stored == StoredObject(key, len(data), "image/png")
    assert storage.head(key) == StoredObject(key, len(data), "image/png")
    assert read_all(storage, key) == data
    assert leftovers(storage) == [key]
    storage.delete(key)
    assert storage.head(key) is None
    assert leftovers(storage) == []
    storage.delete(key)  # idempotent
    with pytest.raises(ObjectNotFound) as info:
        storage.open_read(key)
    assert isinstance(info.value, KeyError)


def test_content_type_is_kept_even_when_the_name_says_otherwise(storage: Storage) -> None:
    key = f"users/{USER}/library/clip.bin"
    storage.put_stream(key, io.BytesIO(b"\x00\x00\x00\x18ftypmp42"), "video/mp4")
    assert storage.head(key) == StoredObject(key, 12, "video/mp4")


def test_empty_object_and_overwrite(storage: Storage) -> None:
    key = job_video_key(USER, "0190a1b2c3d4e5f6a7b8c9d0e1f2a3b4")
    assert storage.put_stream(key, io.BytesIO(b""), "video/mp4").size == 0
    assert read_all(storage, key) == b""
    storage.put_stream(key, io.BytesIO(b"second version"), "video/mp4")
    assert read_all(storage, key) == b"second version"
    assert storage.head(key) == StoredObject(key, 14, "video/mp4")


def test_short_reads_are_joined_into_full_parts(storage: Storage) -> None:
    """Sources like raw sockets return less than asked; parts must still be complete."""

    class Trickle(Source):
        def read(self, n: int = -1) -> bytes:
            return super().read(min(n, 300_000) if n and n > 0 else 300_000)

    source = Trickle(MULTIPART_BYTES + 3 * MiB)
    key = f"users/{USER}/library/trickle.mp4"
    assert storage.put_stream(key, source, "video/mp4").size == source.size
    assert digest_of(storage, key) == source.digest.hexdigest()


# --- download links ---------------------------------------------------------------------------


def test_download_url_serves_the_bytes(storage: Storage) -> None:
    key = library_key(USER, "png")
    data = make_png(16, 16)
    storage.put_stream(key, io.BytesIO(data), "image/png")
    url = storage.download_url(key, expires_in=600)
    if isinstance(storage, S3Storage):
        assert url.startswith("http://127.0.0.1:")
        fetched = requests.get(url, timeout=10)
        assert fetched.status_code == 200 and fetched.content == data
        assert fetched.headers["Content-Type"] == "image/png"
        return
    assert url.startswith(f"/files/{key}?expires=")
    client = files_app(storage).test_client()
    resp = client.get(url)
    assert resp.status_code == 200 and resp.data == data
    assert resp.headers["Content-Type"] == "image/png"
    cache = resp.headers["Cache-Control"]
    assert cache.startswith("private, max-age=") and 590 <= int(cache.split("=")[1]) <= 600
    ranged = client.get(url, headers={"Range": "bytes=2-9"})
    assert ranged.status_code == 206 and ranged.data == data[2:10]
    assert ranged.headers["Content-Range"] == f"bytes 2-9/{len(data)}"


def test_local_links_refuse_bad_expired_and_tampered_signatures(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "root", "test-secret")
    mine, theirs = library_key(USER, "png"), library_key(OTHER, "png")
    for key in (mine, theirs):
        storage.put_stream(key, io.BytesIO(key.encode()), "image/png")
    client = files_app(storage).test_client()
    url = storage.download_url(mine)
    assert client.get(url).data == mine.encode()
    forbidden = {"error": "FORBIDDEN"}

    bad_sig = url.split("&sig=")[0] + "&sig=" + "0" * 64
    assert (client.get(bad_sig).status_code, client.get(bad_sig).get_json()) == (403, forbidden)
    assert client.get(f"/files/{mine}").status_code == 403  # unsigned
    expired = storage.download_url(mine, expires_in=-5)
    assert (client.get(expired).status_code, client.get(expired).get_json()) == (403, forbidden)
    tampered = url.replace(mine, theirs)
    assert client.get(tampered).status_code == 403
    later = url.replace("expires=", "expires=9")  # extending the deadline breaks the sig
    assert client.get(later).status_code == 403
    other_secret = LocalStorage(tmp_path / "root", "another-secret").download_url(mine)
    assert client.get(other_secret).status_code == 403

    storage.delete(mine)
    gone = client.get(url)
    assert (gone.status_code, gone.get_json()) == (404, {"error": "Not found"})
    assert storage.verify_signature(mine, "not-a-number", "x") is False
    exp, sig = url.split("expires=")[1].split("&sig=")
    assert storage.verify_signature(mine, exp, sig) is True
    assert storage.verify_signature(mine, exp, sig, now=int(exp) + 1) is False


def test_files_route_is_404_when_storage_is_s3(s3_endpoint: str) -> None:
    s3 = S3Storage("unused", make_s3_client(s3_settings(s3_endpoint)))
    resp = files_app(s3).test_client().get(f"/files/users/{USER}/library/a.png?expires=1&sig=x")
    assert (resp.status_code, resp.get_json()) == (404, {"error": "Not found"})


# --- caps, failures and atomicity ---------------------------------------------------------------


def test_too_large_stream_leaves_nothing(storage: Storage) -> None:
    key = job_video_key(USER, "0190a1b2c3d4e5f6a7b8c9d0e1f2a3b4")
    cap = 2 * MULTIPART_BYTES + 1
    seen: list[int] = []
    # Probe once a multipart upload (or temp file) must exist: past two parts' worth.
    source = Source(4 * MULTIPART_BYTES, probe_at=2 * MULTIPART_BYTES,
                    probe=lambda: seen.append(in_flight(storage)))
    with pytest.raises(ObjectTooLarge) as info:
        storage.put_stream(key, source, "video/mp4", max_bytes=cap)
    assert info.value.limit == cap
    assert source.pos <= cap + 1  # stopped as soon as the cap was crossed
    assert seen and seen[0] >= 1  # a partial upload really was under way...
    assert storage.head(key) is None
    assert leftovers(storage) == []  # ...and nothing of it remains


def test_exactly_at_the_cap_is_accepted(storage: Storage) -> None:
    key = library_key(USER, "webp")
    stored = storage.put_stream(key, Source(1000), "image/webp", max_bytes=1000)
    assert stored.size == 1000 and storage.head(key) == stored
    with pytest.raises(ObjectTooLarge):
        storage.put_stream(library_key(USER, "webp"), Source(1001), "image/webp", max_bytes=1000)
    assert leftovers(storage) == [key]


@pytest.mark.parametrize("size, fail_at", [(3 * MULTIPART_BYTES, 2 * MULTIPART_BYTES + MiB),
                                           (5 * MiB, 2 * MiB)], ids=["multipart", "single"])
def test_stream_error_midway_leaves_nothing_and_keeps_the_old_object(
        storage: Storage, size: int, fail_at: int) -> None:
    key = job_video_key(USER, "0190a1b2c3d4e5f6a7b8c9d0e1f2a3b4")
    storage.put_stream(key, io.BytesIO(b"previous"), "video/mp4")
    seen: list[Any] = []

    def probe() -> None:
        seen.append((in_flight(storage), read_all(storage, key)))

    source = Source(size, fail_at=fail_at, probe_at=fail_at, probe=probe)
    with pytest.raises(ConnectionResetError, match="connection cut mid-stream"):
        storage.put_stream(key, source, "video/mp4")
    if size > MULTIPART_BYTES:
        assert seen[0][0] >= 1  # the abort had something to clean up
    assert seen[0][1] == b"previous"  # readers never see a half-written object
    assert read_all(storage, key) == b"previous"
    assert storage.head(key) == StoredObject(key, 8, "video/mp4")
    assert leftovers(storage) == [key]


def test_readers_never_see_a_partial_new_object(storage: Storage) -> None:
    key = library_key(USER, "jpg")
    seen: list[StoredObject | None] = []
    source = Source(MULTIPART_BYTES + 2 * MiB, probe_at=MULTIPART_BYTES,
                    probe=lambda: seen.append(storage.head(key)))
    storage.put_stream(key, source, "image/jpeg")
    assert seen == [None]
    assert storage.head(key) == StoredObject(key, source.size, "image/jpeg")


def test_64_mib_stream_uploads_with_bounded_memory(storage: Storage) -> None:
    key = job_video_key(USER, "0190a1b2c3d4e5f6a7b8c9d0e1f2a3b4")
    storage.ping()  # warm the client (endpoint resolution, models) before measuring
    source = Source(64 * MiB)
    tracemalloc.start()
    try:
        stored = storage.put_stream(key, source, "video/mp4", max_bytes=100 * MiB)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert stored == StoredObject(key, 64 * MiB, "video/mp4")
    assert peak < 40 * MiB, f"peak {peak / MiB:.1f} MiB"
    assert digest_of(storage, key) == source.digest.hexdigest()


# --- keys ------------------------------------------------------------------------------------


def test_key_formats() -> None:
    key = library_key(USER, "png")
    prefix = f"users/{USER}/library/"
    assert key.startswith(prefix) and key.endswith(".png")
    name = key[len(prefix):-len(".png")]
    assert len(name) == 32 and int(name, 16) >= 0
    assert library_key(USER, "png") != key
    job = "0190a1b2c3d4e5f6a7b8c9d0e1f2a3b4"
    assert job_video_key(USER, job) == f"{prefix}{job}.mp4" == job_video_key(USER, job)
    assert is_owned_key(USER, key) and is_owned_key(USER, job_video_key(USER, job))
    for bad_user, ext in (("../x", "png"), ("a/b", "png"), ("", "png"), (USER, "p/g"),
                          (USER, ""), (USER, "../png")):
        with pytest.raises(ValueError):
            library_key(bad_user, ext)
    for bad_job in ("..", "a/b", "", "../../etc"):
        with pytest.raises(ValueError):
            job_video_key(USER, bad_job)


@pytest.mark.parametrize("key", [
    f"users/{OTHER}/library/a.png",
    f"users/{USER}/library/../../users/{OTHER}/library/a.png",
    f"users/{USER}/library/..",
    f"users/{USER}/library/a..png",
    f"users/{USER}/library/.hidden",
    f"users/{USER}/library/",
    f"users/{USER}/library/sub/a.png",
    f"/users/{USER}/library/a.png",
    f"users\\{USER}\\library\\a.png",
    f"users/{USER}/library/a\\b.png",
    f"users/{USER}/library/%2e%2e",
    f"users/{USER}/library/a%2Fb.png",
    f"users/{USER}/library/a.png\n",
    f"users/{USER}/library/a\x00.png",
    f"users/{USER}/libraryx/a.png",
    f"users/{USER}/library/" + "a" * 129,
    f"users/{USER}//library/a.png",
    f"users/{USER}/library/é.png",
])
def test_is_owned_key_rejects(key: str) -> None:
    assert is_owned_key(USER, key) is False


def test_is_owned_key_needs_a_sane_user_id() -> None:
    assert is_owned_key("", "users//library/a.png") is False
    assert is_owned_key("..", "users/../library/a.png") is False
    assert is_owned_key(USER, f"users/{USER}/library/" + "a" * 128) is True


@pytest.mark.parametrize("key", [
    "../outside.png", "users/../../outside.png", "/etc/passwd", "a\\..\\b", "a/./b", "a//b",
    "a/b\x00c", "", ".meta", "users/x/.a.png.meta.json", "a/b/", "%2e%2e/x",
])
def test_storage_refuses_keys_that_could_escape(storage: Storage, key: str,
                                                tmp_path: Path) -> None:
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(InvalidKey) as info:
        storage.put_stream(key, io.BytesIO(b"evil"), "image/png")
    assert isinstance(info.value, ValueError)
    for call in (storage.head, storage.delete, storage.open_read, storage.download_url):
        with pytest.raises(InvalidKey):
            call(key)
    assert sorted(tmp_path.rglob("*")) == before
    assert leftovers(storage) == []


def test_local_storage_refuses_symlink_escape(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    storage = LocalStorage(tmp_path / "root", "k")
    (tmp_path / "root" / "users").mkdir(parents=True)
    (tmp_path / "root" / "users" / "evil").symlink_to(outside, target_is_directory=True)
    with pytest.raises(InvalidKey):
        storage.put_stream("users/evil/library/a.png", io.BytesIO(b"x"), "image/png")
    assert list(outside.iterdir()) == []
    assert storage.path_for("users/ok/library/a.png") == (
        tmp_path / "root" / "users/ok/library/a.png").resolve()


# --- sniffing, readiness, wiring -------------------------------------------------------------

JPEG = bytes.fromhex("ffd8ffe000104a46494600010101004800480000ffdb004300") + b"\x08" * 64
WEBP = b"RIFF" + (1234).to_bytes(4, "little") + b"WEBPVP8 " + b"\x00" * 32


@pytest.mark.parametrize("data, expected", [
    (make_png(), "image/png"), (JPEG, "image/jpeg"), (WEBP, "image/webp"),
    (b"", None), (b"\x89PNG\r\n", None), (b"\xff\xd8", None), (b"GIF89a\x01\x00", None),
    (b"RIFF\x24\x00\x00\x00WAVEfmt ", None), (b"RIFF\x24\x00\x00", None),
    (b"<html><body>hi</body></html>", None), (b"\x00\x00\x00\x18ftypmp42", None),
])
def test_sniff_image_type(data: bytes, expected: str | None) -> None:
    assert sniff_image_type(data[:16]) == expected
    if expected:
        assert EXTENSIONS[expected] in {"png", "jpg", "webp"}


def test_ping(storage: Storage) -> None:
    storage.ping()


def test_ping_reports_unreachable_backends(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    s3 = S3Storage("vj-nowhere", make_s3_client(s3_settings(closed)))
    started = time.monotonic()
    with pytest.raises(StorageUnavailable):
        s3.ping()
    with pytest.raises(StorageUnavailable):
        s3.head(f"users/{USER}/library/a.png")
    assert time.monotonic() - started < 30
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"")
    with pytest.raises(StorageUnavailable):
        LocalStorage(blocker / "root", "k").ping()


def _missing(storage: Storage) -> None:
    storage.open_read(library_key(USER, "png"))


def _too_large(storage: Storage) -> None:
    storage.put_stream(library_key(USER, "webp"), Source(1001), "image/webp", max_bytes=1000)


def _bad_key(storage: Storage) -> None:
    storage.head("users/../etc/passwd")


@pytest.mark.parametrize("provoke, kind, retryable", [
    (_missing, ObjectNotFound, False),
    (_too_large, ObjectTooLarge, False),
    (_bad_key, InvalidKey, False),
], ids=["missing", "too-large", "bad-key"])
def test_every_failure_is_an_external_error_with_message_and_retryable(
        storage: Storage, provoke: Callable[[Storage], None], kind: type[StorageError],
        retryable: bool) -> None:
    with pytest.raises(ExternalError) as caught:
        provoke(storage)
    error = caught.value
    assert type(error) is kind and isinstance(error, StorageError)
    assert error.retryable is retryable
    assert error.message and error.message in str(error)


def test_backend_failures_say_whether_retrying_may_help(storage: Storage,
                                                        tmp_path: Path) -> None:
    """A bucket that does not exist is refused for good (S3 answers 404); a backend that
    cannot be reached (a closed port, a directory that cannot be made) is retryable."""
    if isinstance(storage, S3Storage):
        with pytest.raises(StorageError) as refused:
            S3Storage("vj-never-created", storage.client).put_stream(
                library_key(USER, "png"), io.BytesIO(b"x"), "image/png")
        assert type(refused.value) is StorageError and refused.value.retryable is False
        assert "NoSuchBucket" in refused.value.message
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
        down: Storage = S3Storage("vj-nowhere", make_s3_client(s3_settings(closed)))
    else:
        blocker = tmp_path / "a-file"
        blocker.write_bytes(b"")
        down = LocalStorage(blocker / "root", "k")
    with pytest.raises(ExternalError) as unavailable:
        down.ping()
    assert isinstance(unavailable.value, StorageUnavailable)
    assert unavailable.value.retryable is True and unavailable.value.message


def test_build_storage_picks_the_backend(tmp_path: Path, s3_endpoint: str) -> None:
    local = build_storage(Settings(storage_dir=str(tmp_path / "st"), secret_key="k"))
    assert isinstance(local, LocalStorage) and local.root == tmp_path / "st"
    keyless = build_storage(Settings(storage_dir=str(tmp_path / "st")))
    assert isinstance(keyless, LocalStorage)
    assert keyless.download_url("a.png") != local.download_url("a.png")  # a random key
    remote = build_storage(s3_settings(s3_endpoint, "vj-built"))
    assert isinstance(remote, S3Storage) and remote.bucket == "vj-built"
    remote.client.create_bucket(Bucket="vj-built")
    remote.ping()
