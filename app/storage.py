"""Object storage (S3-compatible or a local directory) behind one streaming, atomic interface.

Exceptions::

    StorageError            anything storage could not do (.message; an ExternalError)
    ├── InvalidKey          (also ValueError) a key outside the allowed shape
    ├── ObjectNotFound      (also KeyError) open_read of a missing key
    ├── ObjectTooLarge      more than max_bytes arrived; nothing was kept
    └── StorageUnavailable  the backend cannot be reached (retry later; /readyz);
                            the one with .retryable True

Errors raised by the *source* stream (a cut download) propagate unchanged, after cleanup.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import json
import mimetypes
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol, cast
from urllib.parse import quote

from app.external import ExternalError

if TYPE_CHECKING:
    from app.config import Settings

CHUNK_BYTES = 1024 * 1024
MULTIPART_BYTES = 8 * 1024 * 1024
EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "video/mp4": "mp4"}
_TYPES_BY_EXTENSION = {ext: ctype for ctype, ext in EXTENSIONS.items()}

# Key formats live here and nowhere else.
_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
_NAME_RE = re.compile(_NAME)
_EXTENSION_RE = re.compile(r"[A-Za-z0-9]{1,16}")
_OWNED_RE = re.compile(rf"users/({_NAME})/library/({_NAME})")
_MAX_KEY_CHARS = 1024


class StorageError(ExternalError):
    """Storage could not do what was asked."""


class InvalidKey(StorageError, ValueError):
    """The key is not of the allowed shape (traversal, absolute, odd characters...)."""


class ObjectNotFound(StorageError, KeyError):
    """No object under this key."""


class ObjectTooLarge(StorageError):
    """The stream exceeded `limit` bytes; nothing was stored."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"object exceeds {limit} bytes")
        self.limit = limit


class StorageUnavailable(StorageError):
    """The backend cannot be reached right now; retrying later may work."""

    retryable = True


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    content_type: str


class Readable(Protocol):
    """The one method put_stream needs from a source (files, HTTP bodies, uploads)."""

    def read(self, size: int, /) -> bytes: ...


class Storage(Protocol):
    """What the app needs from object storage; both backends behave the same."""

    def put_stream(self, key: str, stream: Readable, content_type: str,
                   max_bytes: int | None = None) -> StoredObject: ...

    def head(self, key: str) -> StoredObject | None: ...

    def delete(self, key: str) -> None: ...

    def open_read(self, key: str) -> BinaryIO: ...

    def download_url(self, key: str, expires_in: int = 3600) -> str: ...

    def ping(self) -> None: ...

    def remove_stale_uploads(self, older_than_seconds: float) -> int:
        """Remove what uploads interrupted by a crash left behind; returns how many."""
        ...


def _is_name(value: str) -> bool:
    return _NAME_RE.fullmatch(value) is not None and ".." not in value


def library_key(user_id: str, extension: str) -> str:
    """A fresh, unguessable key in the user's library."""
    if not _is_name(user_id) or _EXTENSION_RE.fullmatch(extension) is None:
        raise InvalidKey(f"bad user id or extension: {user_id!r}, {extension!r}")
    return f"users/{user_id}/library/{secrets.token_hex(16)}.{extension}"


def job_video_key(user_id: str, job_id: str) -> str:
    """Derived from the job id so that a retried upload overwrites instead of duplicating."""
    if not _is_name(user_id) or not _is_name(job_id):
        raise InvalidKey(f"bad user id or job id: {user_id!r}, {job_id!r}")
    return f"users/{user_id}/library/{job_id}.mp4"


def job_poster_key(user_id: str, job_id: str) -> str:
    """The poster frame stored next to a job's video (same derivation, so it overwrites)."""
    if not _is_name(user_id) or not _is_name(job_id):
        raise InvalidKey(f"bad user id or job id: {user_id!r}, {job_id!r}")
    return f"users/{user_id}/library/{job_id}.poster.jpg"


def is_owned_key(user_id: str, key: str) -> bool:
    """True only for `users/<user_id>/library/<name>` exactly: no traversal or encodings."""
    if not isinstance(key, str) or not isinstance(user_id, str):
        return False
    match = _OWNED_RE.fullmatch(key)
    return (match is not None and match.group(1) == user_id and _is_name(user_id)
            and _is_name(match.group(2)))


def check_key(key: str) -> str:
    """Refuse keys that could name a path outside the storage root or a hidden file."""
    if not isinstance(key, str) or not key or len(key) > _MAX_KEY_CHARS:
        raise InvalidKey("key must be a non-empty string")
    if not all(_is_name(part) for part in key.split("/")):
        raise InvalidKey(f"invalid key: {key!r}")
    return key


def sniff_image_type(first_bytes: bytes) -> str | None:
    """The image type from magic bytes, never from a client's name or header."""
    if first_bytes.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if first_bytes.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if len(first_bytes) >= 12 and first_bytes[:4] == b"RIFF" and first_bytes[8:12] == b"WEBP":
        return "image/webp"
    return None


def _guess_type(key: str) -> str:
    ext = key.rsplit(".", 1)[-1].lower() if "." in key else ""
    return (_TYPES_BY_EXTENSION.get(ext) or mimetypes.guess_type(key)[0]
            or "application/octet-stream")


class _CappedReader:
    """Reads exactly what is asked (short reads joined) and fails once past the cap."""

    def __init__(self, stream: Readable, max_bytes: int | None) -> None:
        self._stream = stream
        self._max = max_bytes
        self.count = 0
        self.error: BaseException | None = None

    def read(self, size: int = -1) -> bytes:
        try:
            return self._read(size)
        except BaseException as exc:
            self.error = exc
            raise

    def _read(self, size: int) -> bytes:
        if size is None or size < 0:
            size = CHUNK_BYTES  # never slurp the whole source
        if self._max is not None:
            # One byte past the cap is enough to know it was crossed.
            size = min(size, self._max - self.count + 1)
        pieces: list[bytes] = []
        got = 0
        while got < size:
            data = self._stream.read(size - got)
            if not data:
                break
            pieces.append(data)
            got += len(data)
        self.count += got
        if self._max is not None and self.count > self._max:
            raise ObjectTooLarge(self._max)
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)


# --- S3 ------------------------------------------------------------------------------------


def make_s3_client(settings: Settings) -> Any:
    """A boto3 S3 client with timeouts and retries; path-style for custom endpoints."""
    import boto3
    from botocore.config import Config

    config = Config(
        signature_version="s3v4",
        connect_timeout=5,
        read_timeout=60,
        retries={"max_attempts": 3, "mode": "standard"},
        s3={"addressing_style": "path"} if settings.s3_endpoint_url else None,
        # Newer botocore adds CRC checksums by default, which some S3-compatible stores reject.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    # A private session: boto3's default session is not safe to share across threads.
    return boto3.session.Session().client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        region_name=settings.s3_region,
        aws_access_key_id=settings.aws_access_key_id,
        aws_secret_access_key=settings.aws_secret_access_key,
        config=config,
    )


def _s3_transfer_config() -> Any:
    from boto3.s3.transfer import TransferConfig

    config = TransferConfig(multipart_threshold=MULTIPART_BYTES,
                            multipart_chunksize=MULTIPART_BYTES, max_concurrency=2)
    # Bounds memory for non-seekable streams: at most this many parts are buffered.
    config.max_in_memory_upload_chunks = 2
    return config


def _is_missing(exc: Exception) -> bool:
    code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
    return code in {"404", "NoSuchKey", "NotFound"}


def _s3_error(exc: Exception, what: str) -> StorageError:
    from botocore.exceptions import BotoCoreError, ClientError

    if isinstance(exc, ClientError):
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if status >= 500 or status == 429:
            return StorageUnavailable(f"{what}: {exc}")
        return StorageError(f"{what}: {exc}")
    if isinstance(exc, BotoCoreError):
        return StorageUnavailable(f"{what}: {type(exc).__name__}: {exc}")
    return StorageError(f"{what}: {exc}")


class S3Storage:
    """A bucket on S3 or any S3-compatible service (R2, MinIO...)."""

    def __init__(self, bucket: str, client: Any) -> None:
        self.bucket = bucket
        self.client = client
        self._transfer = _s3_transfer_config()

    def put_stream(self, key: str, stream: Readable, content_type: str,
                   max_bytes: int | None = None) -> StoredObject:
        """Stream up (multipart above 8 MiB); a failure aborts the multipart upload."""
        from botocore.exceptions import BotoCoreError, ClientError

        check_key(key)
        reader = _CappedReader(stream, max_bytes)
        try:
            # s3transfer registers abort_multipart_upload as a failure cleanup and runs it
            # before result() returns, so no incomplete upload outlives this call.
            self.client.upload_fileobj(reader, self.bucket, key,
                                       ExtraArgs={"ContentType": content_type},
                                       Config=self._transfer)
        except BaseException as exc:
            if reader.error is not None and exc is reader.error:
                raise  # the source's own error (or ObjectTooLarge), unchanged
            if isinstance(exc, (BotoCoreError, ClientError)):
                raise _s3_error(exc, f"upload {key}") from exc
            raise
        return StoredObject(key, reader.count, content_type)

    def head(self, key: str) -> StoredObject | None:
        check_key(key)
        try:
            meta = self.client.head_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            if _is_missing(exc):
                return None
            raise _s3_error(exc, f"head {key}") from exc
        return StoredObject(key, int(meta["ContentLength"]),
                            meta.get("ContentType") or "application/octet-stream")

    def delete(self, key: str) -> None:
        check_key(key)
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            if not _is_missing(exc):
                raise _s3_error(exc, f"delete {key}") from exc

    def open_read(self, key: str) -> BinaryIO:
        check_key(key)
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
        except Exception as exc:
            if _is_missing(exc):
                raise ObjectNotFound(key) from None
            raise _s3_error(exc, f"get {key}") from exc
        return cast(BinaryIO, body)

    def download_url(self, key: str, expires_in: int = 3600) -> str:
        """A presigned GET URL, absolute, valid for `expires_in` seconds."""
        check_key(key)
        return str(self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=expires_in))

    def ping(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except Exception as exc:
            raise StorageUnavailable(f"bucket {self.bucket}: {exc}") from exc

    def remove_stale_uploads(self, older_than_seconds: float) -> int:
        """Abort multipart uploads started longer ago than that (a worker killed mid-copy
        leaves its parts billed but invisible; a bucket lifecycle rule does the same)."""
        import datetime as dt

        cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=older_than_seconds)
        removed = 0
        try:
            paginator = self.client.get_paginator("list_multipart_uploads")
            for page in paginator.paginate(Bucket=self.bucket):
                for upload in page.get("Uploads", []):
                    if upload["Initiated"] < cutoff:
                        self.client.abort_multipart_upload(
                            Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"])
                        removed += 1
        except Exception as exc:
            raise _s3_error(exc, "cleanup") from None
        return removed


# --- local directory -----------------------------------------------------------------------


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable; not every platform can open a directory."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class LocalStorage:
    """Files under `root` (one machine); links are HMAC-signed and expire.

    The content type is kept in a hidden sidecar `.<name>.meta.json`; hidden names can never
    be keys, so neither sidecars nor temp files are reachable through the API. Temp files
    left by a crash (`.<name>.*.tmp`) are never served and may be removed at leisure.
    """

    def __init__(self, root: Path, secret_key: str, url_prefix: str = "/files") -> None:
        self.root = Path(root)
        self.url_prefix = url_prefix.rstrip("/")
        # A purpose-specific key: a leaked link signature says nothing about sessions.
        self._sign_key = hmac.new(secret_key.encode(), b"videojobs-files-v1",
                                  hashlib.sha256).digest()

    def path_for(self, key: str) -> Path:
        """The file for `key`, guaranteed inside root (symlinks included)."""
        check_key(key)
        root = self.root.resolve()
        path = (root / key).resolve()
        if path == root or root not in path.parents:
            raise InvalidKey(f"key escapes the storage root: {key!r}")
        return path

    @staticmethod
    def _meta_path(path: Path) -> Path:
        return path.with_name(f".{path.name}.meta.json")

    def put_stream(self, key: str, stream: Readable, content_type: str,
                   max_bytes: int | None = None) -> StoredObject:
        """Copy in 1 MiB chunks to a temp file, fsync, then rename over the key."""
        path = self.path_for(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        token = secrets.token_hex(8)
        tmp = path.with_name(f".{path.name}.{token}.tmp")
        meta_tmp = path.with_name(f".{path.name}.{token}.meta.tmp")
        reader = _CappedReader(stream, max_bytes)
        try:
            with open(tmp, "xb") as out:
                while data := reader.read(CHUNK_BYTES):
                    out.write(data)
                out.flush()
                os.fsync(out.fileno())
            with open(meta_tmp, "x", encoding="utf-8") as meta:
                json.dump({"content_type": content_type}, meta)
                meta.flush()
                os.fsync(meta.fileno())
            os.replace(meta_tmp, self._meta_path(path))
            os.replace(tmp, path)
        except BaseException:
            for leftover in (tmp, meta_tmp):
                with contextlib.suppress(OSError):
                    leftover.unlink(missing_ok=True)
            raise
        _fsync_dir(path.parent)
        return StoredObject(key, reader.count, content_type)

    def head(self, key: str) -> StoredObject | None:
        path = self.path_for(key)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return None
        return StoredObject(key, size, self._content_type(path, key))

    def _content_type(self, path: Path, key: str) -> str:
        try:
            meta = json.loads(self._meta_path(path).read_text(encoding="utf-8"))
            return str(meta["content_type"])
        except (OSError, ValueError, KeyError, TypeError):
            return _guess_type(key)

    def delete(self, key: str) -> None:
        path = self.path_for(key)
        path.unlink(missing_ok=True)
        self._meta_path(path).unlink(missing_ok=True)

    def open_read(self, key: str) -> BinaryIO:
        try:
            return open(self.path_for(key), "rb")
        except (FileNotFoundError, IsADirectoryError):
            raise ObjectNotFound(key) from None

    def _signature(self, key: str, expires: int) -> str:
        return hmac.new(self._sign_key, f"{key}\n{expires}".encode(), hashlib.sha256).hexdigest()

    def download_url(self, key: str, expires_in: int = 3600) -> str:
        """A relative signed link `/files/<key>?expires=&sig=` (the API makes it absolute)."""
        check_key(key)
        expires = int(time.time()) + expires_in
        return (f"{self.url_prefix}/{quote(key, safe='/')}"
                f"?expires={expires}&sig={self._signature(key, expires)}")

    def verify_signature(self, key: str, expires: str | int, sig: str,
                         now: float | None = None) -> bool:
        """True for an unexpired link this storage signed for exactly this key."""
        try:
            expires_at = int(expires)
        except (TypeError, ValueError):
            return False
        if expires_at < (time.time() if now is None else now):
            return False
        return hmac.compare_digest(self._signature(key, expires_at), str(sig))

    def ping(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageUnavailable(f"{self.root}: {exc}") from exc
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise StorageUnavailable(f"{self.root} is not writable")

    def remove_stale_uploads(self, older_than_seconds: float) -> int:
        """Delete temp files (`.<name>.*.tmp`) older than that: an upload killed with
        kill -9 never reached its cleanup. Younger ones may belong to a running upload."""
        cutoff = time.time() - older_than_seconds
        removed = 0
        for directory, _, files in os.walk(self.root):
            for name in files:
                if not (name.startswith(".") and name.endswith(".tmp")):
                    continue
                path = Path(directory) / name
                with contextlib.suppress(OSError):
                    if path.stat().st_mtime < cutoff:
                        path.unlink()
                        removed += 1
        return removed


@functools.cache
def _process_key() -> str:
    """Without SECRET_KEY, links stay valid only as long as this process lives."""
    return secrets.token_hex(32)


def build_storage(settings: Settings) -> Storage:
    """S3 when a bucket is configured, else the local directory."""
    if settings.s3_bucket:
        return S3Storage(settings.s3_bucket, make_s3_client(settings))
    return LocalStorage(Path(settings.storage_dir), settings.secret_key or _process_key())
