"""The on-disk cache: keys, identical round trips, atomicity (never a partial entry), SGD resume."""

import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import companion  # noqa: F401
from companion import cache as cache_module
from companion.cache import Cache, config_key, default_directory
from companion.config import ModelConfig
from companion.sgd import SGDConfig, run_sgd

ROOT = Path(__file__).resolve().parent.parent


def _files(folder):
    """Every file of a cache folder but its lock file."""
    return [p for p in Path(folder).glob("*") if p.name != ".lock"]


@dataclasses.dataclass(frozen=True)
class Toy:
    n: int = 3
    x: float = 0.5
    name: str = "a"
    sizes: tuple = (1, 2)
    inner: ModelConfig = ModelConfig.preset("test")
    extra: float | None = None


def test_key_depends_on_every_field_and_is_stable():
    base = Toy()
    assert config_key(base) == config_key(Toy())
    variants = [
        Toy(n=4),
        Toy(x=0.5000001),
        Toy(name="b"),
        Toy(sizes=(1, 3)),
        Toy(inner=ModelConfig.preset("test", seed=1)),
        Toy(extra=0.0),
    ]
    keys = {config_key(v) for v in variants} | {config_key(base)}
    assert len(keys) == len(variants) + 1
    assert config_key(base, namespace="x") != config_key(base) != config_key(base, version="2")


def test_round_trip_is_identical(tmp_path):
    store = Cache(tmp_path, namespace="toy", version="1")
    arrays = {
        "a": np.arange(12, dtype=np.float32).reshape(3, 4),
        "b": np.array([1.5, np.nan, np.inf]),
        "c": np.int64(7),
    }
    assert store.load(Toy()) is None
    store.save(Toy(), arrays, {"wall": 1.25, "note": "hi"})
    loaded, meta = store.load(Toy())
    assert set(loaded) == set(arrays)
    for name, value in arrays.items():
        assert loaded[name].dtype == np.asarray(value).dtype
        np.testing.assert_array_equal(loaded[name], value)
    assert meta == {"wall": 1.25, "note": "hi"}
    assert store.load(Toy(n=4)) is None
    assert Cache(tmp_path, namespace="toy", version="2").load(Toy()) is None  # version is part of the key
    store.remove(Toy())
    assert store.load(Toy()) is None and not _files(tmp_path / "toy")


def test_directory_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPANION_CACHE", str(tmp_path / "env"))
    assert default_directory() == tmp_path / "env"
    Cache().save(Toy(), {"a": np.zeros(2)})
    assert list((tmp_path / "env").glob("*.json"))
    monkeypatch.delenv("COMPANION_CACHE")
    assert default_directory() != tmp_path / "env"


def test_failed_write_leaves_the_previous_entry_or_nothing(tmp_path, monkeypatch):
    store = Cache(tmp_path)
    real_savez = np.savez

    def half_then_crash(handle, **arrays):
        handle.write(b"PK\x03\x04 partial zip")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", half_then_crash)
    with pytest.warns(UserWarning, match="could not store"):  # a failed save warns, never raises
        assert store.save(Toy(), {"a": np.ones(5)}) is None
    assert store.load(Toy()) is None
    assert not _files(tmp_path)  # the temporary file was removed too

    monkeypatch.setattr(np, "savez", real_savez)
    store.save(Toy(), {"a": np.ones(5)}, {"v": 1})
    monkeypatch.setattr(np, "savez", half_then_crash)
    assert store.save(Toy(), {"a": np.full(5, 2.0)}, {"v": 2}) is None
    arrays, meta = store.load(Toy())
    np.testing.assert_array_equal(arrays["a"], np.ones(5))
    assert meta == {"v": 1}

    # a crash after the arrays but before the JSON commit mark: the old entry stays whole
    monkeypatch.setattr(np, "savez", real_savez)
    real_atomic = cache_module._atomic_write

    def fail_on_json(path, write):
        if path.suffix == ".json":
            raise KeyboardInterrupt
        return real_atomic(path, write)

    monkeypatch.setattr(cache_module, "_atomic_write", fail_on_json)
    with pytest.raises(KeyboardInterrupt):
        store.save(Toy(), {"a": np.full(5, 3.0)}, {"v": 3})
    arrays, meta = store.load(Toy())
    np.testing.assert_array_equal(arrays["a"], np.ones(5))
    assert meta == {"v": 1}


@pytest.mark.filterwarnings("ignore:cache. ignoring")
def test_corrupted_or_foreign_files_are_ignored(tmp_path):
    store = Cache(tmp_path)
    path = store.save(Toy(), {"a": np.arange(1000.0)})
    record = path.read_text()
    npz = next(tmp_path.glob("*.npz"))
    npz.write_bytes(npz.read_bytes()[:100])  # truncated arrays
    assert store.load(Toy()) is None
    path.write_text(record.replace('"n": 3', '"n": 4'))  # JSON of another configuration
    assert store.load(Toy()) is None
    path.write_text("{not json")
    assert store.load(Toy()) is None


WRITER = textwrap.dedent(
    """
    import sys, dataclasses, importlib.util, numpy as np
    # load companion/cache.py alone (it needs only NumPy): no JAX start-up in the writer
    spec = importlib.util.spec_from_file_location("cache", sys.argv[2])
    cache = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cache)
    Cache = cache.Cache

    @dataclasses.dataclass(frozen=True)
    class Toy:
        n: int = 3

    store = Cache(sys.argv[1])
    version = 0
    print("ready", flush=True)
    while True:
        version += 1
        store.save(Toy(), {"a": np.full(4_000_000, float(version)), "b": np.full(3, float(version))}, {"version": version})
    """
)


def test_killed_writer_never_leaves_a_partial_entry(tmp_path):
    """SIGKILL a process that rewrites one entry in a loop (32 MB arrays) at random moments:
    whatever is loaded afterwards is one complete version (all arrays and the metadata agree)."""
    env = dict(os.environ, COMPANION_CACHE=str(tmp_path))
    rng = np.random.default_rng(0)
    seen = set()
    # Kill at random moments until both a completed entry and an interrupted write were seen
    # (a busy machine can need more tries; the assertions below say which never happened).
    for trial in range(40):
        if seen and list(tmp_path.glob(".*.tmp")) and trial >= 5:
            break
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(tmp_path), str(ROOT / "companion" / "cache.py")],
            stdout=subprocess.PIPE,
            env=env,
        )
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(0.2 + rng.uniform(0, 0.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        hit = Cache(tmp_path).load(_WriterToy())
        if hit is None:
            continue
        arrays, meta = hit
        version = meta["version"]
        assert np.all(arrays["a"] == version) and np.all(arrays["b"] == version)
        seen.add(version)
    assert seen, "the writer never completed a single entry: the test did not exercise anything"
    leftovers = list(tmp_path.glob(".*.tmp"))
    assert leftovers, "no kill landed in the middle of a write: the test did not exercise anything"
    assert Cache(tmp_path).prune(min_age=0.0) and not list(tmp_path.glob(".*.tmp"))
    assert len(list(tmp_path.glob("*.npz"))) == 1 and Cache(tmp_path).load(_WriterToy()) is not None


@dataclasses.dataclass(frozen=True)
class _WriterToy:
    n: int = 3


_WriterToy.__qualname__ = "Toy"  # the writer's class name, which is part of the key


def test_sgd_result_is_cached_identically(tmp_path):
    config = SGDConfig(ModelConfig.preset("test", seed=1), lr=3e-4, steps=2000, record=(0, 100, 2000))
    first = run_sgd(config, cache=tmp_path)
    assert not first.cached
    again = run_sgd(config, cache=tmp_path)
    assert again.cached
    for name, value in first.arrays().items():
        np.testing.assert_array_equal(getattr(again, name) if name != "final_state" else again.final_state, value)
    assert run_sgd(config.replace(lr=2e-4), cache=tmp_path).cached is False


def test_sgd_crash_resumes_from_checkpoint(tmp_path, monkeypatch):
    """A run interrupted after a checkpoint resumes from it, finishes identically, and leaves no
    partial entry behind; an interrupted run is never loaded as a finished one."""
    import companion._sgd_engine as engine
    import companion.sgd as sgd

    config = SGDConfig(ModelConfig.preset("test", seed=2), lr=3e-4, steps=6000, record=(0, 50, 3000, 6000), block=64)
    reference = run_sgd(config, cache=False)

    real_measure = engine.measure
    calls = {"n": 0}

    def crash_on_third_record(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("simulated crash")
        return real_measure(*args, **kwargs)

    monkeypatch.setattr(engine, "measure", crash_on_third_record)
    with pytest.raises(KeyboardInterrupt):
        run_sgd(config, cache=tmp_path, checkpoint_seconds=0.0, chunk_seconds=1e-9)
    store = Cache(tmp_path, namespace="sgd", version=sgd.ENGINE_VERSION)
    assert store.load(config) is None  # nothing finished is claimed
    partial = store.load(config, tag="partial")
    assert partial is not None and 50 <= int(partial[0]["step"]) <= 3000

    monkeypatch.setattr(engine, "measure", real_measure)
    advanced = []
    real_advance = engine.advance

    def counting_advance(state, teacher, lr, bound, noise, n, **kw):
        advanced.append(int(n))
        return real_advance(state, teacher, lr, bound, noise, n, **kw)

    monkeypatch.setattr(engine, "advance", counting_advance)
    resumed = run_sgd(config, cache=tmp_path)
    assert sum(advanced) == 6000 - int(partial[0]["step"])  # it did not start over
    np.testing.assert_array_equal(resumed.final_state, reference.final_state)
    np.testing.assert_array_equal(resumed.overlaps, reference.overlaps)
    np.testing.assert_array_equal(resumed.loss, reference.loss)
    assert store.load(config, tag="partial") is None and store.load(config) is not None


def test_resolve_names_every_kind_of_cache_argument(tmp_path):
    assert Cache.resolve(None) is None and Cache.resolve(False) is None
    given = Cache(tmp_path / "a", namespace="x", version="old")
    # a caller's Cache contributes its folder; the computation's namespace and version are kept
    resolved = Cache.resolve(given, namespace="y", version="7")
    assert (resolved.directory, resolved.namespace, resolved.version) == (tmp_path / "a", "y", "7")
    kept = Cache.resolve(given)
    assert (kept.namespace, kept.version) == ("x", "old")
    folder = Cache.resolve(tmp_path / "b", namespace="sgd", version="v")
    assert (folder.directory, folder.namespace, folder.version) == (tmp_path / "b", "sgd", "v")
    default = Cache.resolve(True, namespace="flow")
    assert default.directory == default_directory() and default.namespace == "flow"
