"""The storage layer on a local disk and on a real S3-compatible server (moto's, on 127.0.0.1)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from pointscale.storage import Store, StorageError, is_remote, join, open_store


def test_paths_and_urls_are_told_apart():
    assert join("s3://b/runs", "run.json") == "s3://b/runs/run.json"  # not Path('s3:/b/runs')
    assert join("runs/x", "run.json") == Path("runs/x/run.json")
    assert is_remote("s3://b/x") and not is_remote("file:///tmp/x") and not is_remote("/tmp/x")
    assert Store("file:///tmp/x/").url == "/tmp/x"
    assert Store("s3://bucket/a/b/").url == "s3://bucket/a/b"


def test_credentials_in_a_url_are_refused():
    with pytest.raises(StorageError, match="credentials"):
        Store("s3://AKIA:secret@bucket/x")


def test_unknown_protocol_is_one_clear_error():
    with pytest.raises(StorageError, match="unknown storage protocol 'nosuch'"):
        open_store("nosuch://bucket/x")


@pytest.mark.parametrize("remote", [False, True])
def test_objects_round_trip(remote, tmp_path, request):
    location = request.getfixturevalue("s3_bucket") + "/runs/x" if remote else str(tmp_path / "x")
    store = open_store(location)
    assert store.remote is remote
    frame = pd.DataFrame({"a": [1, 2, 3], "b": [0.5, 0.25, 1e-300]})
    store.write_parquet("t/frame.parquet", frame)
    store.write_json("run.json", {"x": 1})
    assert store.read_json("run.json") == {"x": 1}
    pd.testing.assert_frame_equal(store.read_parquet("t/frame.parquet").to_pandas(), frame)
    assert store.list("t") == ["frame.parquet"] and store.list("nothing") == []
    assert store.exists("run.json") and not store.exists("nope.json")
    store.move("t/frame.parquet", "q/frame.parquet")
    assert store.list("t") == [] and store.list("q") == ["frame.parquet"]
    store.delete("q/frame.parquet")
    store.delete("q/frame.parquet")  # twice: nothing to do
    assert sorted(store.walk()) == ["run.json"]


def test_a_remote_folder_is_copied_once_per_machine(s3_bucket, tmp_path):
    store = open_store(s3_bucket + "/ds")
    store.write_bytes("v1/x.npy", b"abc")
    store.write_bytes("v1/meta.json", b"{}")
    first = store.local_copy("v1", cache=tmp_path)
    assert (first / "x.npy").read_bytes() == b"abc"
    store.write_bytes("v1/x.npy", b"changed")  # a dataset version is write-once: the copy is kept
    assert store.local_copy("v1", cache=tmp_path) == first and (first / "x.npy").read_bytes() == b"abc"


def test_wrong_bucket_and_missing_credentials_are_one_line(s3_server, s3_bucket):
    with pytest.raises(StorageError, match="bucket 'no-such-bucket-x' of s3://no-such-bucket-x/r does not exist"):
        open_store("s3://no-such-bucket-x/r")
    # Missing credentials, in a fresh process (botocore would otherwise find the test's own).
    code = ("from pointscale.storage import open_store, StorageError\n"
            "try:\n open_store(%r)\nexcept StorageError as e:\n print(e)\n" % (s3_bucket + "/r"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ENDPOINT_URL=s3_server, AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull,
               AWS_EC2_METADATA_DISABLED="true")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    line = out.stdout.strip()
    assert "\n" not in line and "NoCredentialsError" in line and "AWS_ACCESS_KEY_ID" in line, line


def test_a_missing_protocol_package_names_the_extra():
    code = ("import sys; sys.modules['gcsfs'] = None\n"
            "from pointscale.storage import open_store, StorageError\n"
            "try:\n open_store('gs://b/x')\nexcept StorageError as e:\n print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "gs:// needs the package gcsfs" in out.stdout and "pointscale[gcs]" in out.stdout, out


# ----------------------------------------------------------------------------- the ledger on S3


def _frame(base_ids, per_base=3, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    return pd.DataFrame([{"sample_id": b * 100 + j, "point_id": f"p{j}", "base_id": b, "k": 10,
                          "delta": rng.normal(), "failed": False} for b in base_ids for j in range(per_base)])


def test_ledger_on_object_storage_keeps_its_guarantees(s3_bucket):
    """Write-once content-named keys and a commit record: nothing lost, nothing counted twice,
    a torn or uncommitted write never read, a corrupted object quarantined."""
    import warnings

    from pointscale.sampling import Ledger, LedgerIntegrityWarning

    url = s3_bucket + "/run/samples"
    ledger = Ledger(url)
    a, b = _frame([1, 2]), _frame([3], seed=1)
    ledger.write_shard("a", a, oob=pd.DataFrame({"point_id": ["p0"], "bucket": [0], "n": [1], "n_correct": [1],
                                                 "score_fx": [5]}))
    ledger.write_shard("b", b)
    store = ledger.store
    names = store.list("shards")
    assert "a.parquet.sha256" in names and "a.parquet" not in names  # content-named, not the plain name
    assert any(n.startswith("a.") and n.endswith(".parquet") for n in names)
    # Another process (a fresh object, as a worker or a rerun has) reads the same rows exactly.
    fresh = Ledger(url)
    pd.testing.assert_frame_equal(fresh.read(), pd.concat([a, b], ignore_index=True), check_exact=True)
    assert fresh.completed_base_ids() == {1, 2, 3} and len(fresh.read_oob()) == 1
    # A write that stopped before its record (a killed worker): an orphan key, never read.
    store.write_bytes("shards/c.0123456789abcdef.parquet", b"PAR1 torn")
    assert Ledger(url).completed_base_ids() == {1, 2, 3} and Ledger(url).stats()["uncommitted"] == 1
    # Rewriting a committed shard: the new record names new keys, the old keys go.
    a2 = _frame([1, 2], seed=7)
    Ledger(url).write_shard("a", a2)
    assert sorted(Ledger(url).read()["delta"]) == sorted(pd.concat([a2, b])["delta"])
    assert len([n for n in store.list("shards") if n.startswith("a.")]) == 2  # record + one content key
    # A corrupted object is quarantined and its bases count as not done.
    record = store.read_json("shards/b.parquet.sha256")
    store.write_bytes(record["file"], b"PAR1 flipped bytes")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert Ledger(url).completed_base_ids() == {1, 2}
    assert any(issubclass(w.category, LedgerIntegrityWarning) for w in caught)
    assert Ledger(url).quarantine_contents() and "b.parquet.sha256" not in store.list("shards")


def test_a_data_file_at_a_url_is_the_same_dataset(s3_bucket, tmp_path):
    """``--dataset s3://.../file.csv``: read through a per-machine copy; the same version as the local file."""
    from sklearn.datasets import load_breast_cancer

    from pointscale.data import load_dataset

    frame = load_breast_cancer(as_frame=True).frame
    frame.to_csv(tmp_path / "cancer.csv", index=False)
    Store(s3_bucket).write_bytes("data/cancer.csv", (tmp_path / "cancer.csv").read_bytes())
    here = load_dataset(str(tmp_path / "cancer.csv"), target="target")
    there = load_dataset(f"{s3_bucket}/data/cancer.csv", target="target")
    assert there.fingerprint == here.fingerprint and there.name == "cancer"
    with pytest.raises(StorageError, match="no file at"):
        load_dataset(f"{s3_bucket}/data/missing.csv", target="target")


def test_storage_options_take_no_credentials_and_reach_every_new_store(s3_server, s3_bucket, monkeypatch):
    from pointscale import storage

    with pytest.raises(StorageError, match="client_kwargs.aws_secret_access_key") as err:
        storage.set_storage_options({"client_kwargs": {"aws_secret_access_key": "SEKRIT"}})
    assert "SEKRIT" not in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(StorageError, match="key"):
        storage.set_storage_options({"key": "abc"})
    # The endpoint comes from the options alone: without them this process cannot find the server.
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    try:
        storage.set_storage_options({"endpoint_url": s3_server})
        assert storage.storage_options() == {"endpoint_url": s3_server}
        Store(s3_bucket, {"skip_instance_cache": True}).write_bytes("probe.txt", b"here")
        assert Store(s3_bucket).read_bytes("probe.txt") == b"here"
    finally:
        storage.set_storage_options(None)
    assert storage.storage_options() == {}


def test_taking_the_lock_keeps_the_record_of_a_pushed_dataset(s3_bucket, tmp_path, monkeypatch):
    """A worker on the flow's machine pushes the dataset version from the shared working copy;
    the flow's lock (a pull) must not forget it, or its next push uploads it again, whole."""
    from pointscale.runs import RunFolder

    monkeypatch.setenv("POINTSCALE_CACHE", str(tmp_path / "cache"))
    worker = RunFolder(s3_bucket + "/runs/pulled")
    (worker.datasets / "v1").mkdir(parents=True)
    (worker.datasets / "v1" / "X.npy").write_bytes(b"x" * 1000)
    worker.push()
    flow = RunFolder(s3_bucket + "/runs/pulled")
    assert flow.root == worker.root  # one working copy per machine
    written = []
    original = flow.store.write_bytes
    monkeypatch.setattr(flow.store, "write_bytes", lambda name, data: written.append(name) or original(name, data))
    with flow.lock():
        flow.update_manifest(status="running")
    assert written == ["run.json"]
    # A record is kept only while the URL has the object: deleted there, the next push sends it again.
    flow.store.delete("datasets/v1/X.npy")
    flow.pull()
    flow.push()
    assert "datasets/v1/X.npy" in written and flow.store.exists("datasets/v1/X.npy")


def test_copying_a_large_object_holds_a_few_blocks_not_the_object(s3_bucket, tmp_path):
    """The flow copies large tables (the laws, the values) into its working copy: memory must not grow
    with their size. Measured in a fresh process: fsspec's default read held ~3 blocks of 50 MiB."""
    size = 96 << 20
    Store(s3_bucket).write_bytes("big.bin", os.urandom(1 << 20) * (size >> 20))
    # VmHWM, the peak of this process's own memory (ru_maxrss would carry the forking test's over exec).
    script = (
        "import sys\n"
        "from pointscale.storage import Store\n"
        "def peak():\n"
        "    return int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1])\n"
        "store = Store(sys.argv[1])\n"
        "store.exists('big.bin')\n"
        "before = peak()\n"
        "store.download('big.bin', sys.argv[2])\n"
        "print((peak() - before) // 1024)\n")
    out = subprocess.run([sys.executable, "-c", script, s3_bucket, str(tmp_path / "big.bin")],
                         capture_output=True, text=True, timeout=120, check=True)
    assert (tmp_path / "big.bin").stat().st_size == size
    assert int(out.stdout.strip()) < 40  # MiB of peak growth; the default read grew by ~150
