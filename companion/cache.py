r"""A small on-disk cache for finished (and partially finished) computations.

An entry is keyed by a hash of a **frozen dataclass configuration** (nested dataclasses, tuples,
numbers, strings and None are allowed) together with a *namespace* and a *version* string, so
that a change of the algorithm can invalidate old entries. Each entry is two files:

* ``<key>.<token>.npz``: the arrays (NumPy ``savez``, no pickling), under a fresh name each time;
* ``<key>.json``: the configuration, the version, free-form metadata, the array names, shapes and
  dtypes, and the name and size of its ``.npz`` file.

Both are written **atomically**: to a temporary file in the same folder, flushed and fsynced,
then moved into place with :func:`os.replace`. The arrays go first, under a new name; the JSON
file is replaced last and is the commit mark; only then is the previous ``.npz`` deleted. An
entry without its JSON, whose JSON does not match the requested configuration, or whose ``.npz``
is missing, of the wrong size or lacks an array, is treated as absent. A crash at any point
therefore leaves the previous complete entry or no entry, never a partial or mixed one.

Where the cache lives (first match wins):

1. the ``directory`` argument;
2. the environment variable ``COMPANION_CACHE``;
3. ``cache/`` at the root of the source checkout, when the package is used from one (a
   ``pyproject.toml`` next to the ``companion`` folder), so that chapters, tests and scripts
   started from any folder share it;
4. ``~/.cache/companion``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import tempfile
import uuid
from pathlib import Path
from typing import Any, Mapping

import numpy as np

#: Environment variable that selects the cache folder.
ENV_VAR = "COMPANION_CACHE"


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
    """A 20-hex-digit SHA-256 key of ``(namespace, version, configuration)``."""
    text = json.dumps([namespace, version, json.loads(config_json(config))], sort_keys=True)
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
    """Atomic ``.npz`` + ``.json`` entries keyed by a configuration's hash.

    Args:
        directory: the cache folder (default: :func:`default_directory`).
        namespace: a sub-folder and part of the key (e.g. ``"sgd"``).
        version: part of the key; bump it when the computation changes meaning.
    """

    def __init__(self, directory: str | os.PathLike | None = None, namespace: str = "", version: str = ""):
        self.directory = Path(directory).expanduser() if directory is not None else default_directory()
        self.namespace = namespace
        self.version = version

    def __repr__(self) -> str:
        return f"Cache({str(self.directory)!r}, namespace={self.namespace!r}, version={self.version!r})"

    @classmethod
    def resolve(cls, cache: Any, namespace: str = "", version: str = "") -> "Cache | None":
        """The cache an entry point's ``cache`` argument names: ``True`` the default folder (with
        this namespace and version), ``None`` or ``False`` none, a :class:`Cache` itself, anything
        else a folder path."""
        if cache is True:
            return cls(namespace=namespace, version=version)
        if cache is None or cache is False:
            return None
        if isinstance(cache, Cache):
            return cache
        return cls(cache, namespace=namespace, version=version)

    def key(self, config: Any) -> str:
        return config_key(config, self.namespace, self.version)

    def _folder(self) -> Path:
        return self.directory / self.namespace if self.namespace else self.directory

    def json_path(self, config: Any, tag: str = "") -> Path:
        """Path of the entry's JSON commit mark (``tag`` distinguishes e.g. a partial checkpoint)."""
        return self._folder() / f"{self.key(config)}{'.' + tag if tag else ''}.json"

    def _record(self, json_path: Path) -> dict | None:
        try:
            return json.loads(json_path.read_text())
        except (OSError, ValueError):
            return None

    def save(self, config: Any, arrays: Mapping[str, Any], meta: Mapping[str, Any] | None = None, tag: str = "") -> Path:
        """Write an entry atomically (arrays first, the JSON commit mark last); returns the JSON path."""
        json_path = self.json_path(config, tag)
        arrays = {name: np.asarray(value) for name, value in arrays.items()}
        for name, value in arrays.items():
            if value.dtype == object:
                raise TypeError(f"cache: array {name!r} has dtype object, which cannot be stored without pickling")
        old = self._record(json_path)
        npz_path = json_path.with_name(f"{json_path.stem}.{uuid.uuid4().hex[:12]}.npz")
        _atomic_write(npz_path, lambda handle: np.savez(handle, **arrays))
        record = {
            "key": self.key(config),
            "namespace": self.namespace,
            "version": self.version,
            "tag": tag,
            "config": json.loads(config_json(config)),
            "arrays": {name: [str(v.dtype), list(v.shape)] for name, v in arrays.items()},
            "npz": npz_path.name,
            "npz_size": npz_path.stat().st_size,
            "meta": _canonical(dict(meta or {})),
        }
        text = json.dumps(record, indent=1, sort_keys=True).encode()
        try:
            _atomic_write(json_path, lambda handle: handle.write(text))
        except BaseException:
            npz_path.unlink(missing_ok=True)
            raise
        if old and isinstance(old.get("npz"), str) and old["npz"] != npz_path.name:
            (json_path.parent / Path(old["npz"]).name).unlink(missing_ok=True)
        return json_path

    def load(self, config: Any, tag: str = "") -> tuple[dict[str, np.ndarray], dict] | None:
        """``(arrays, meta)`` of a complete entry for exactly this configuration, else ``None``."""
        json_path = self.json_path(config, tag)
        record = self._record(json_path)
        if (
            not isinstance(record, dict)
            or record.get("config") != json.loads(config_json(config))
            or record.get("version") != self.version
            or not isinstance(record.get("npz"), str)
        ):
            return None
        npz_path = json_path.parent / Path(record["npz"]).name
        try:
            if npz_path.stat().st_size != record.get("npz_size"):
                return None
            with np.load(npz_path, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
        except (OSError, ValueError, KeyError, EOFError):  # missing, truncated or foreign files
            return None
        expected = record.get("arrays", {})
        if set(arrays) != set(expected) or any(
            [str(arrays[n].dtype), list(arrays[n].shape)] != expected[n] for n in expected
        ):
            return None
        return arrays, record.get("meta", {})

    def contains(self, config: Any, tag: str = "") -> bool:
        return self.load(config, tag) is not None

    def prune(self, min_age: float = 3600.0) -> list[Path]:
        """Delete leftovers of crashed writes older than ``min_age`` seconds: temporary files and
        ``.npz`` files that no JSON commit mark references. Returns the deleted paths."""
        import time

        folder = self._folder()
        if not folder.is_dir():
            return []
        referenced = set()
        for json_path in folder.glob("*.json"):
            record = self._record(json_path)
            if isinstance(record, dict) and isinstance(record.get("npz"), str):
                referenced.add(Path(record["npz"]).name)
        now, removed = time.time(), []
        for path in [*folder.glob(".*.tmp"), *folder.glob("*.npz")]:
            if path.name not in referenced and now - path.stat().st_mtime > min_age:
                path.unlink(missing_ok=True)
                removed.append(path)
        return removed

    def remove(self, config: Any, tag: str = "") -> None:
        """Delete an entry (the JSON commit mark first, so that a crash leaves no valid half)."""
        json_path = self.json_path(config, tag)
        record = self._record(json_path)
        json_path.unlink(missing_ok=True)
        if isinstance(record, dict) and isinstance(record.get("npz"), str):
            (json_path.parent / Path(record["npz"]).name).unlink(missing_ok=True)
