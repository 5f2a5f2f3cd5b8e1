"""Item ids of the traffic record: the caller's id when given, else a keyed hash (HMAC) of the normalized text.

A plain sha256 of a text can be reversed with a dictionary (hash every slur, every common phrase, compare); an HMAC
cannot without the key. The key is 32 random bytes:

- locally (a folder home, no cluster), created on first use at ``<HARMGUARD_HOME>/secrets/item-id.key``, readable
  by its owner only (0600 in a 0700 folder); a key file others may read, or owned by someone else, is refused;
- on a cluster (``KUBERNETES_SERVICE_HOST`` set, or a ``gs://`` home), from a Kubernetes Secret: the file a Secret
  volume mounts (``HARMGUARD_ITEM_KEY_FILE``; the RayService mounts ``harmguard-item-key``, ``harmguard.k8s.kuberay``)
  or an environment variable fed by ``secretKeyRef`` (``HARMGUARD_ITEM_KEY``). Missing there, there is no key, and
  the caller records nothing (never a guessable id).

A Secret volume's file is owned by root, and in a pod with an ``fsGroup`` (every harmguard pod) the kubelet gives
that group read access whatever ``defaultMode`` says (0400 becomes 0440: kubernetes/kubernetes#57923). A mounted key
may therefore be owned by root and readable by the process's own group; never by others, never writable by the group.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from harmguard.data.snapshot import normalize_text
from harmguard.settings import Settings

KEY_FILE_ENV = "HARMGUARD_ITEM_KEY_FILE"
KEY_ENV = "HARMGUARD_ITEM_KEY"
LOCAL_KEY = Path("secrets") / "item-id.key"
KEY_BYTES = 32
MIN_KEY_BYTES = 32  # a shorter secret is guessable enough to defeat the point
HMAC_PREFIX = "hmac:"  # an id made here never collides with a caller's id that happens to be hex
MAX_CALLER_ID = 256  # characters; a longer caller id is replaced by the keyed hash


class ItemKeyError(RuntimeError):
    """The item-id key exists but cannot be used safely (others may read it, too short); the message says why."""


@dataclass(frozen=True)
class ItemKey:
    """The HMAC key and where it came from (for the start-up line; never the key itself)."""

    secret: bytes
    origin: str

    def __repr__(self) -> str:
        return f"ItemKey(origin={self.origin!r})"


def on_cluster(settings: Settings, environ: Mapping[str, str]) -> bool:
    """Whether this process runs where the key must come from a Secret (Kubernetes, or a remote home)."""
    return bool(environ.get("KUBERNETES_SERVICE_HOST")) or not settings.home_is_local


def _checked(secret: bytes, origin: str) -> ItemKey:
    if len(secret) < MIN_KEY_BYTES:
        raise ItemKeyError(f"the item-id key from {origin} has {len(secret)} bytes; it needs at least {MIN_KEY_BYTES}")
    return ItemKey(secret, origin)


def _read_mounted(path: Path) -> bytes:
    """A Secret volume's key file, after checking that no one outside this process's user and group can read it."""
    st = path.stat()
    problem = None
    if st.st_mode & stat.S_IRWXO:
        problem = f"can be read by others (mode {stat.filemode(st.st_mode)}): mount the Secret with defaultMode 0400"
    elif st.st_mode & (stat.S_IWGRP | stat.S_IXGRP):
        problem = f"can be changed by its group (mode {stat.filemode(st.st_mode)}): a Secret volume mounts it 0400"
    elif hasattr(os, "getuid") and st.st_uid not in (0, os.getuid()):
        problem = f"belongs to another user (uid {st.st_uid}); a Secret volume's file is root's or this user's"
    elif hasattr(os, "getgid") and st.st_mode & stat.S_IRGRP and st.st_gid not in {os.getgid(), *os.getgroups()}:
        problem = f"can be read by group {st.st_gid}, which is not this process's (the pod's fsGroup)"
    if problem:
        raise ItemKeyError(f"{KEY_FILE_ENV}: the key file {problem}, or anyone who reads it can reverse the item ids")
    return path.read_bytes()


def _read_private(path: Path) -> bytes:
    """The file's bytes, after checking that only its owner (this user) can read it."""
    st = path.stat()
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ItemKeyError(
            f"{path} can be read by others (mode {stat.filemode(st.st_mode)}): an item-id key must be private to its "
            "owner (chmod 600), or anyone who reads it can reverse the item ids"
        )
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise ItemKeyError(f"{path} belongs to another user (uid {st.st_uid}); refusing an item-id key it controls")
    return path.read_bytes()


def _create_local_key(path: Path) -> None:
    """Create the key file create-only: a private temporary file, fully written, then linked to the name."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(KEY_BYTES))
            f.flush()
            os.fsync(f.fileno())
        with contextlib.suppress(FileExistsError):  # another process created it first: use theirs
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_item_key(settings: Settings, environ: Mapping[str, str] | None = None) -> ItemKey | None:
    """The item-id key, or None where it must come from a Secret that is not there.

    Args:
        settings: Resolved settings (the home decides where a local key lives).
        environ: The environment to read (``os.environ`` when omitted).

    Raises:
        ItemKeyError: A key exists but others may read it, another user owns it, or it is too short.
    """
    environ = os.environ if environ is None else environ
    if path := environ.get(KEY_FILE_ENV):
        key_file = Path(path)
        if not key_file.is_file():
            if on_cluster(settings, environ):
                return None
            raise ItemKeyError(f"{KEY_FILE_ENV}={path} is not a file")
        # A Secret volume's file is a symlink into ..data: the checks look at the file itself.
        return _checked(_read_mounted(key_file.resolve()).strip(), f"{KEY_FILE_ENV}")
    if value := environ.get(KEY_ENV):
        return _checked(value.encode(), KEY_ENV)
    if on_cluster(settings, environ):
        return None
    key_file = settings.home_path / LOCAL_KEY
    if not key_file.exists():
        _create_local_key(key_file)
    return _checked(_read_private(key_file), str(key_file))


def item_id_for_text(key: ItemKey, text: str) -> str:
    """The keyed id of a text: HMAC-SHA256 of its normalized form (128 bits, hex), so re-posts share an id."""
    digest = hmac.new(key.secret, normalize_text(text).encode("utf-8", "surrogatepass"), hashlib.sha256)
    return HMAC_PREFIX + digest.hexdigest()[:32]


def item_ids(key: ItemKey, texts: list[str], caller_ids: list[str] | None) -> tuple[list[str], list[str]]:
    """One id per text and where each came from (``caller`` or ``hmac``).

    A caller id is used when it is a non-empty string of at most ``MAX_CALLER_ID`` characters; otherwise (no ids, a
    list of another length, a blank or oversized id) the keyed hash of the text stands in.
    """
    usable = caller_ids is not None and len(caller_ids) == len(texts)
    ids, kinds = [], []
    for i, text in enumerate(texts):
        given = caller_ids[i] if usable and caller_ids is not None else None
        if isinstance(given, str) and given.strip() and len(given) <= MAX_CALLER_ID:
            ids.append(given)
            kinds.append("caller")
        else:
            ids.append(item_id_for_text(key, text))
            kinds.append("hmac")
    return ids, kinds
