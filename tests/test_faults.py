"""Faults against the results cache: a corrupt entry (flipped bit, same-shape tampering, wrong-typed
JSON, a folder in place of a file), a read-only cache, a full disk, SIGKILL mid-write and two
processes on one cache. Each asserts that nothing finished is lost and nothing crashes."""

import dataclasses
import errno
import json
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

from companion import cache as cache_module
from companion.cache import Cache
from companion.config import ModelConfig
from companion.experiments import VERSION, FlowRun, run_flow

ROOT = Path(__file__).resolve().parent.parent
RUN = FlowRun(ModelConfig(d=8, P=2, m=4), horizon=20.0, records=12)


@dataclasses.dataclass(frozen=True)
class Toy:
    n: int = 3


@pytest.fixture(autouse=True)
def fresh_reports(monkeypatch):
    """Every test sees "said once" afresh."""
    monkeypatch.setattr(cache_module, "_reported", set())
    monkeypatch.setattr(cache_module, "_writable", {})


def _entry(tmp_path):
    store = Cache(tmp_path, namespace="flow", version=VERSION)
    reference = run_flow(RUN, store)
    json_path = store.json_path(RUN)
    npz_path = json_path.parent / json.loads(json_path.read_text())["npz"]
    return store, reference, json_path, npz_path


def _recomputed_once(store, reference):
    """A load of the damaged entry warns once, the run recomputes and replaces it, equal to before."""
    with pytest.warns(UserWarning, match="recomputed and replaced"):
        assert store.load(RUN) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once: the recomputation does not warn again
        again = run_flow(RUN, store)
        loaded = store.load(RUN)
    assert loaded is not None
    for name, value in reference.items():
        np.testing.assert_array_equal(again[name], value)
        np.testing.assert_array_equal(loaded[0][name], value)
    leftovers = sorted(p.name for p in store.json_path(RUN).parent.iterdir() if p.name != ".lock")
    assert len(leftovers) == 2, leftovers  # one JSON, one npz: the damaged files were replaced


def test_flipped_bit_in_the_arrays(tmp_path):
    store, reference, _, npz = _entry(tmp_path)
    data = bytearray(npz.read_bytes())
    data[len(data) // 2] ^= 0x10
    npz.write_bytes(bytes(data))
    _recomputed_once(store, reference)


def test_same_shape_tampering_fails_the_checksum(tmp_path):
    store, reference, _, npz = _entry(tmp_path)
    with np.load(npz) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["loss"] = arrays["loss"] * 0.5  # same shape, dtype and file size
    with open(npz, "wb") as handle:
        np.savez(handle, **arrays)
    _recomputed_once(store, reference)


@pytest.mark.parametrize(
    "field, value",
    [
        ("arrays", "x"),
        ("npz_size", "12"),
        ("meta", []),
        ("npz", 7),
        ("checksums", {"loss": 1}),
        ("arrays", {"loss": ["float64", "x"]}),
    ],
)
def test_wrong_typed_json_fields(tmp_path, field, value):
    store, reference, json_path, _ = _entry(tmp_path)
    record = json.loads(json_path.read_text())
    record[field] = value
    json_path.write_text(json.dumps(record))
    _recomputed_once(store, reference)


def test_a_folder_in_place_of_the_json(tmp_path):
    store, reference, json_path, npz = _entry(tmp_path)
    json_path.unlink()
    npz.unlink()
    json_path.mkdir()
    (json_path / "junk").write_text("x")
    _recomputed_once(store, reference)
    assert json_path.is_file()


def test_a_folder_in_place_of_the_arrays(tmp_path):
    store, reference, _, npz = _entry(tmp_path)
    npz.unlink()
    npz.mkdir()
    _recomputed_once(store, reference)
    assert not npz.exists()


def test_read_only_cache_runs_without_it_and_says_so_at_the_start(tmp_path, monkeypatch):
    def refused(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(cache_module.tempfile, "mkstemp", refused)  # root ignores chmod: refuse the probe
    with pytest.warns(UserWarning, match="running without the results cache"):
        assert Cache.resolve(tmp_path / "ro", namespace="flow") is None
    from companion.experiments import run_width_sweep, width_sweep

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once
        result = run_width_sweep(width_sweep("test", widths=(4,), horizon=20.0, records=12), cache=tmp_path / "ro")
    assert result.loss.shape == (1, 1, 12)
    assert not list((tmp_path / "ro").rglob("*.json"))


def test_full_disk_keeps_the_result_and_the_previous_entry(tmp_path, monkeypatch):
    store = Cache(tmp_path, namespace="toy")
    store.save(Toy(), {"a": np.ones(4)}, {"v": 1})

    def full(handle, **arrays):
        handle.write(b"PK\x03\x04")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "savez", full)
    with pytest.warns(UserWarning, match="No space left"):
        assert store.save(Toy(), {"a": np.zeros(4)}, {"v": 2}) is None
    arrays, meta = store.load(Toy())
    np.testing.assert_array_equal(arrays["a"], np.ones(4))
    assert meta == {"v": 1}
    # a computation whose save fails still returns its result
    fresh = Cache(tmp_path, namespace="flow", version=VERSION)
    with pytest.warns(UserWarning, match="the result is returned but not cached"):
        result = run_flow(RUN, fresh)
    assert result["loss"].shape == (12,) and fresh.load(RUN) is None
    assert not list(tmp_path.rglob("*.tmp"))


WRITER = textwrap.dedent(
    """
    import sys, dataclasses, importlib.util, numpy as np
    spec = importlib.util.spec_from_file_location("cache", sys.argv[2])
    cache = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cache)

    @dataclasses.dataclass(frozen=True)
    class Toy:
        n: int = 3

    store = cache.Cache(sys.argv[1])
    me = int(sys.argv[3])
    for i in range(int(sys.argv[4])):
        # both processes checkpoint the same shared entry, like two runs of one configuration
        store.save(Toy(99), {"a": np.full(2000, float(i)), "who": np.array(me)}, {"i": i}, tag="partial")
        if i % 10 == 9:
            store.save(Toy(me), {"a": np.full(2000, float(i))}, {"i": i})  # each finishes its own
    store.save(Toy(99), {"a": np.full(2000, -1.0)}, {"i": -1})  # the shared run finishes
    store.remove(Toy(99), tag="partial")
    """
)


def test_two_processes_on_one_cache_lose_nothing_and_leave_no_orphans(tmp_path):
    iterations = 150
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                WRITER,
                str(tmp_path),
                str(ROOT / "companion" / "cache.py"),
                str(me),
                str(iterations),
            ]
        )
        for me in (0, 1)
    ]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]

    store = Cache(tmp_path)  # the module's Toy has the writer's qualified name, so the same keys
    for me in (0, 1, 99):
        hit = store.load(Toy(me))
        assert hit is not None, me  # every finished entry is there, whole
        assert hit[1]["i"] == (iterations - 1 if me != 99 else -1)
    assert store.load(Toy(99), tag="partial") is None
    names = sorted(p.name for p in tmp_path.iterdir() if p.name != ".lock")
    assert len([n for n in names if n.endswith(".npz")]) == 3, names  # no orphaned arrays
    assert len([n for n in names if n.endswith(".json")]) == 3, names  # no orphaned checkpoint
    assert not [n for n in names if n.endswith(".tmp")], names


KILLED = textwrap.dedent(
    """
    import sys, dataclasses, importlib.util, numpy as np
    spec = importlib.util.spec_from_file_location("cache", sys.argv[2])
    cache = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cache)

    @dataclasses.dataclass(frozen=True)
    class Toy:
        n: int = 3

    store = cache.Cache(sys.argv[1])
    store.save(Toy(1), {"a": np.full(10, 1.0)}, {"v": "finished"})
    print("ready", flush=True)
    v = 0
    while True:
        v += 1
        store.save(Toy(), {"a": np.full(3_000_000, float(v))}, {"v": v}, tag="partial")
    """
)


def test_sigkill_mid_checkpoint_loses_nothing_finished_and_the_next_save_cleans_up(tmp_path):
    import signal
    import time

    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED, str(tmp_path), str(ROOT / "companion" / "cache.py")], stdout=subprocess.PIPE
    )
    assert proc.stdout.readline().strip() == b"ready"
    time.sleep(0.7)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()

    store = Cache(tmp_path)
    assert store.load(Toy(1)) is not None  # the finished entry survived
    # the finished version supersedes the checkpoint, and its save removes every leftover of it
    store.save(Toy(), {"a": np.zeros(3)}, {"v": "final"})
    names = sorted(p.name for p in tmp_path.iterdir() if p.name != ".lock")
    assert len(names) == 4 and not [n for n in names if n.endswith(".tmp") or ".partial" in n], names
    assert store.load(Toy())[1] == {"v": "final"}
