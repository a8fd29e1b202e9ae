r"""A small on-disk cache for finished (and partially finished) computations.

An entry is keyed by a hash of a **frozen dataclass configuration** (nested dataclasses, tuples,
numbers, strings and None are allowed) together with a *namespace* and a *version* string, so
that a change of the algorithm can invalidate old entries. Each entry is two files:

* ``<key>.<token>.npz``: the arrays (NumPy ``savez``, no pickling), under a fresh name each time;
* ``<key>.json``: the configuration, the version, free-form metadata, the array names, shapes and
  dtypes, and the name and size of its ``.npz`` file.

Both are written **atomically**: to a temporary file in the same folder, flushed and fsynced,
then moved into place with :func:`os.replace`. The arrays go first, under a new name; the JSON
file is replaced last and is the commit mark; only then is the previous ``.npz`` deleted. A crash
at any point therefore leaves the previous complete entry or no entry, never a partial or mixed one.

Every entry is **verified** when it is loaded: the JSON records a SHA-256 checksum of every array
(its dtype, shape and bytes). An entry whose JSON is unreadable or malformed (wrong field types, a
folder in place of a file), does not match the requested configuration, or whose ``.npz`` is
missing, of the wrong size, not a readable archive (``BadZipFile``) or fails its checksums is
treated as **absent**: the caller recomputes and the next save replaces it. This is said once per
entry (a warning), never raised.

Writers of one folder take an exclusive lock (``fcntl.flock`` on ``<folder>/.lock``) while they
save or remove, so that two processes checkpointing the same entry cannot orphan each other's
files; under the lock every ``.npz`` and temporary file of the entry that no JSON references is
deleted. Saving an entry's untagged (finished) version removes its tagged checkpoints. A cache
folder that cannot be written is detected when a computation resolves its cache argument
(:meth:`Cache.resolve`): the computation then runs without a cache and says so at the start. A
save that fails later (a full disk) warns and returns ``None``: the computation's result is
still returned, only not stored.

Where the cache lives (first match wins):

1. the ``directory`` argument;
2. the environment variable ``COMPANION_CACHE``;
3. ``cache/`` at the root of the source checkout, when the package is used from one (a
   ``pyproject.toml`` next to the ``companion`` folder), so that chapters, tests and scripts
   started from any folder share it;
4. ``~/.cache/companion``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import math
import os
import re
import shutil
import tempfile
import uuid
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from companion import _perturb

#: Environment variable that selects the cache folder.
ENV_VAR = "COMPANION_CACHE"

#: Errors that mean "this file is not a usable entry" (never raised to the caller by ``load``).
_UNREADABLE = (OSError, ValueError, KeyError, EOFError, TypeError, AttributeError, zipfile.BadZipFile)

_reported: set[str] = set()  # entries and folders already warned about (say it once per process)
_writable: dict[str, str | None] = {}  # folder -> None (writable) or the reason it is not


def _say_once(key: str, message: str) -> None:
    if key not in _reported:
        _reported.add(key)
        warnings.warn(message, UserWarning, stacklevel=3)


def _discard(path: Path) -> None:
    """Delete a file, or a folder standing where a file should be; a missing one is fine."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    except OSError:
        pass


def array_checksum(value: np.ndarray) -> str:
    """SHA-256 (24 hex digits) of an array's dtype, shape and bytes (C order)."""
    value = np.ascontiguousarray(value)
    digest = hashlib.sha256(f"{value.dtype.str}{value.shape}".encode())
    digest.update(value.tobytes())
    return digest.hexdigest()[:24]


def _well_formed(record) -> bool:
    """Whether a parsed JSON entry has every field this module relies on, with the right types."""
    if not isinstance(record, dict):
        return False
    arrays, sums = record.get("arrays"), record.get("checksums")
    return (
        isinstance(record.get("npz"), str)
        and isinstance(record.get("npz_size"), int)
        and isinstance(record.get("version"), str)
        and isinstance(record.get("meta"), dict)
        and isinstance(arrays, dict)
        and isinstance(sums, dict)
        and set(arrays) == set(sums)
        and all(
            isinstance(v, list)
            and len(v) == 2
            and isinstance(v[0], str)
            and isinstance(v[1], list)
            and all(isinstance(n, int) for n in v[1])
            for v in arrays.values()
        )
        and all(isinstance(v, str) for v in sums.values())
    )


def check_writable(folder: Path) -> str | None:
    """``None`` if files can be created in ``folder`` (made if missing), else the reason (a short text)."""
    for parent in [folder, *folder.parents]:
        if parent.exists():
            if not parent.is_dir():
                return f"{parent} is a file, not a folder"
            break
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not folder.is_dir():
            return f"{folder} is not a folder"
        fd, probe = tempfile.mkstemp(prefix=".probe.", suffix=".tmp", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        return f"{folder} cannot be written ({error.strerror or error})"
    return None


def unwritable_message(reason: str) -> str:
    """What is said (once) when a cache folder cannot be written."""
    return f"cache: {reason}; running without the results cache (nothing is loaded or stored)"


@contextlib.contextmanager
def _folder_lock(folder: Path):
    """An exclusive lock on ``folder`` among the processes that use this module (POSIX flock)."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): atomic replaces alone
        yield
        return
    handle = open(folder / ".lock", "a+b")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        yield
    finally:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        finally:
            handle.close()


def default_directory() -> Path:
    """The cache folder used when none is given (see the module docstring for the rules)."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    root = Path(__file__).resolve().parent.parent
    if (root / "pyproject.toml").is_file() and os.access(root, os.W_OK):
        return root / "cache"
    return Path.home() / ".cache" / "companion"


def _canonical(value: Any) -> Any:
    """A JSON-able, canonical form of a configuration value (dataclasses become dicts)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: _canonical(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return {"__class__": type(value).__qualname__, **fields}
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if not math.isfinite(value):
            return repr(value)
        # repr round-trips exactly; JSON of an integral float keeps the ".0"
        return value
    if value is None or isinstance(value, str):
        return value
    raise TypeError(
        f"cache: cannot hash a configuration value of type {type(value).__name__} ({value!r}); "
        "use numbers, strings, None, tuples and nested dataclasses"
    )


def config_json(config: Any) -> str:
    """The canonical JSON text of a configuration (sorted keys, exact floats)."""
    return json.dumps(_canonical(config), sort_keys=True, separators=(",", ":"))


def config_key(config: Any, namespace: str = "", version: str = "") -> str:
    """A 20-hex-digit SHA-256 key of ``(namespace, version, configuration)``.

    Under the portability check's perturbation (``COMPANION_PERTURB``) the key also names it, so a
    perturbed run never reads or overwrites an unperturbed one.
    """
    parts: list[Any] = [namespace, version, json.loads(config_json(config))]
    if _perturb.mode():
        parts.append({"perturb": _perturb.mode()})
    text = json.dumps(parts, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _atomic_write(path: Path, write) -> None:
    """Call ``write(fileobj)`` on a temporary file next to ``path``, then move it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


class Cache:
    """Atomic, verified ``.npz`` + ``.json`` entries keyed by a configuration's hash.

    Args:
        directory: the cache folder (default: :func:`default_directory`).
        namespace: a sub-folder and part of the key (e.g. ``"sgd"``).
        version: part of the key; bump it when the computation changes meaning.
    """

    def __init__(self, directory: str | os.PathLike | None = None, namespace: str = "", version: str = ""):
        self.directory = Path(directory).expanduser() if directory is not None else default_directory()
        if not isinstance(namespace, str) or not isinstance(version, str):
            raise TypeError(f"namespace and version must be strings, got {namespace!r} and {version!r}")
        self.namespace = namespace
        self.version = version

    def __repr__(self) -> str:
        return f"Cache({str(self.directory)!r}, namespace={self.namespace!r}, version={self.version!r})"

    @classmethod
    def resolve(cls, cache: Any, namespace: str = "", version: str = "") -> Cache | None:
        """The cache an entry point's ``cache`` argument names: ``True`` the default folder, ``None``
        or ``False`` none, a :class:`Cache` its folder, anything else a folder path.

        The result always carries the computation's ``namespace`` and ``version`` (a caller's
        :class:`Cache` contributes its folder; its own namespace and version are kept only where
        the computation gives none), so that no computation reads another's entries. A folder
        that cannot be written gives ``None`` and a warning, once, before the computation starts.
        """
        if cache is None or cache is False:
            return None
        if cache is True:
            store = cls(namespace=namespace, version=version)
        elif isinstance(cache, Cache):
            store = cls(cache.directory, namespace=namespace or cache.namespace, version=version or cache.version)
        else:
            store = cls(cache, namespace=namespace, version=version)
        reason = store.writable()
        if reason is not None:
            _say_once(f"unwritable:{reason}", unwritable_message(reason))
            return None
        return store

    def usable(self) -> bool:
        """Whether this cache's folder can be written; if not, say so (once per process, a warning)
        that computations will run without the cache. Call it before a computation starts."""
        reason = self.writable()
        if reason is not None:
            _say_once(f"unwritable:{reason}", unwritable_message(reason))
        return reason is None

    def writable(self) -> str | None:
        """``None`` if this cache's folder can be written (checked once per process), else why not."""
        for folder in (self.directory, self._folder()):
            if str(folder) not in _writable:
                _writable[str(folder)] = check_writable(folder)
            if _writable[str(folder)] is not None:
                return _writable[str(folder)]
        return None

    def key(self, config: Any) -> str:
        return config_key(config, self.namespace, self.version)

    def _folder(self) -> Path:
        return self.directory / self.namespace if self.namespace else self.directory

    def json_path(self, config: Any, tag: str = "") -> Path:
        """Path of the entry's JSON commit mark (``tag`` distinguishes e.g. a partial checkpoint)."""
        if not isinstance(tag, str) or not re.fullmatch(r"[A-Za-z0-9_-]*", tag):
            raise ValueError(f"tag must be letters, digits, '_' or '-', got {tag!r}")
        return self._folder() / f"{self.key(config)}{'.' + tag if tag else ''}.json"

    def _record(self, json_path: Path):
        try:
            return json.loads(json_path.read_text())
        except _UNREADABLE:
            return None

    def _orphans(self, json_path: Path, keep: str | None) -> list[Path]:
        """This entry's ``.npz`` and temporary files other than ``keep``. Call under the folder
        lock: every writer holds it while it writes, so any such file is a leftover."""
        stem = re.escape(json_path.stem)
        npz = re.compile(rf"^{stem}\.[0-9a-f]{{12}}\.npz$")
        tmp = re.compile(rf"^\.{stem}\.(json|[0-9a-f]{{12}}\.npz)\.[^.]+\.tmp$")
        return [
            path
            for path in json_path.parent.iterdir()
            if path.name != keep and (npz.match(path.name) or tmp.match(path.name))
        ]

    def save(
        self, config: Any, arrays: Mapping[str, Any], meta: Mapping[str, Any] | None = None, tag: str = ""
    ) -> Path | None:
        """Write an entry atomically (arrays first, the JSON commit mark last); returns the JSON path.

        A failure to write (a full disk, a folder made read-only meanwhile) warns once and returns
        ``None``, leaving the previous entry (or none) intact. Saving the untagged entry removes
        its tagged checkpoints; a checkpoint of an entry that is already finished is not written.
        """
        json_path = self.json_path(config, tag)
        arrays = {name: np.asarray(value) for name, value in arrays.items()}
        for name, value in arrays.items():
            if value.dtype == object:
                raise TypeError(f"cache: array {name!r} has dtype object, which cannot be stored without pickling")
        record = {
            "key": self.key(config),
            "namespace": self.namespace,
            "version": self.version,
            "tag": tag,
            "config": json.loads(config_json(config)),
            "arrays": {name: [str(v.dtype), list(v.shape)] for name, v in arrays.items()},
            "checksums": {name: array_checksum(v) for name, v in arrays.items()},
            "meta": _canonical(dict(meta or {})),
        }
        try:
            json_path.parent.mkdir(parents=True, exist_ok=True)
            with _folder_lock(json_path.parent):
                if tag and self.json_path(config).is_file():
                    return None  # already finished (by another process): no checkpoint needed
                npz_path = json_path.with_name(f"{json_path.stem}.{uuid.uuid4().hex[:12]}.npz")
                _atomic_write(npz_path, lambda handle: np.savez(handle, **arrays))
                record["npz"], record["npz_size"] = npz_path.name, npz_path.stat().st_size
                text = json.dumps(record, indent=1, sort_keys=True).encode()
                if json_path.is_dir() and not json_path.is_symlink():
                    _discard(json_path)  # a folder where the commit mark belongs: replace it
                try:
                    _atomic_write(json_path, lambda handle: handle.write(text))
                except BaseException:
                    npz_path.unlink(missing_ok=True)
                    raise
                for orphan in self._orphans(json_path, keep=npz_path.name):
                    _discard(orphan)
                if not tag:  # the finished entry supersedes every checkpoint and leftover of this key
                    key = json_path.stem
                    for path in json_path.parent.iterdir():
                        if path.name.startswith((f"{key}.", f".{key}.")) and path not in (json_path, npz_path):
                            _discard(path)
        except OSError as error:
            reason = errno.errorcode.get(error.errno or 0, type(error).__name__)
            _say_once(
                f"save:{self._folder()}:{reason}",
                f"cache: could not store an entry in {self._folder()} ({error}); the result is returned but not cached",
            )
            return None
        return json_path

    def load(self, config: Any, tag: str = "") -> tuple[dict[str, np.ndarray], dict] | None:
        """``(arrays, meta)`` of a complete, verified entry for exactly this configuration, else ``None``.

        An entry that exists but is unreadable, malformed, for another configuration or fails its
        checksums is reported once (a warning) and treated as absent."""
        json_path = self.json_path(config, tag)
        if not json_path.exists():
            return None
        problem = self._check(json_path, config)
        if isinstance(problem, str):
            _say_once(
                f"entry:{json_path}",
                f"cache: ignoring the entry {json_path.name} in {json_path.parent} "
                f"({problem}); it is recomputed and replaced",
            )
            return None
        return problem

    def _check(self, json_path: Path, config: Any):
        """``(arrays, meta)`` of a verified entry, or a string saying what is wrong with it."""
        record = self._record(json_path)
        if record is None:
            return "its JSON is unreadable"
        if not _well_formed(record):
            return "its JSON lacks fields or has fields of the wrong type"
        if record.get("config") != json.loads(config_json(config)) or record["version"] != self.version:
            return "its JSON is for another configuration or version"
        npz_path = json_path.parent / Path(record["npz"]).name
        try:
            if not npz_path.is_file():
                return f"its arrays {npz_path.name} are missing"
            if npz_path.stat().st_size != record["npz_size"]:
                return f"its arrays {npz_path.name} have the wrong size"
            with np.load(npz_path, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
        except _UNREADABLE as error:  # truncated, flipped bits in the zip structure, foreign files
            return f"its arrays cannot be read: {type(error).__name__}"
        expected, sums = record["arrays"], record["checksums"]
        if set(arrays) != set(expected):
            return "its arrays do not match their names in the JSON"
        for name, value in arrays.items():
            if [str(value.dtype), list(value.shape)] != expected[name] or array_checksum(value) != sums[name]:
                return f"array {name!r} fails its checksum"
        return arrays, record["meta"]

    def contains(self, config: Any, tag: str = "") -> bool:
        return self.load(config, tag) is not None

    def prune(self, min_age: float = 3600.0) -> list[Path]:
        """Delete leftovers of crashed writes older than ``min_age`` seconds: temporary files,
        ``.npz`` files that no JSON commit mark references, and checkpoints (tagged entries) of
        entries that are finished. Returns the deleted paths."""
        import time

        folder = self._folder()
        if not folder.is_dir():
            return []
        removed = []
        with _folder_lock(folder):
            referenced = set()
            for json_path in folder.glob("*.json"):
                record = self._record(json_path)
                if isinstance(record, dict) and isinstance(record.get("npz"), str):
                    referenced.add(Path(record["npz"]).name)
            now = time.time()
            for path in [*folder.glob(".*.tmp"), *folder.glob("*.npz")]:
                try:
                    old = now - path.stat().st_mtime >= min_age
                except OSError:
                    continue
                if path.name not in referenced and old:
                    _discard(path)
                    removed.append(path)
            for json_path in folder.glob("*.*.json"):  # <key>.<tag>.json
                if (folder / f"{json_path.name.split('.')[0]}.json").is_file():
                    removed.extend(self._remove_path(json_path))
        return removed

    def _remove_path(self, json_path: Path) -> list[Path]:
        record = self._record(json_path)
        _discard(json_path)
        removed = [json_path]
        if isinstance(record, dict) and isinstance(record.get("npz"), str):
            npz = json_path.parent / Path(record["npz"]).name
            _discard(npz)
            removed.append(npz)
        return removed

    def remove(self, config: Any, tag: str = "") -> None:
        """Delete an entry (the JSON commit mark first, so that a crash leaves no valid half)."""
        json_path = self.json_path(config, tag)
        if not json_path.parent.is_dir():
            return
        try:
            with _folder_lock(json_path.parent):
                self._remove_path(json_path)
                for orphan in self._orphans(json_path, keep=None):
                    _discard(orphan)
        except OSError as error:
            _say_once(f"remove:{json_path}", f"cache: could not remove {json_path} ({error})")
