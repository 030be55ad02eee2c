"""A tiny file-set publisher shared by tests/_src/test_io.py and the subprocesses it kills (imports
nothing but the standard library and jcausal._src.io, so a subprocess starts fast)."""

import os

from jcausal._src import io


def publish(folder, run, size=1000):
    """Publish the set ``res`` = ``a.bin`` (``size`` random bytes), ``b.txt`` (``"run N"``) and
    ``res.json`` (the run number and the others' SHA-256) into ``folder``, under its lock."""
    payload = {"a.bin": os.urandom(size), "b.txt": f"run {run}\n".encode()}
    with io.output_lock(folder) as lock, lock.stage("res", ["a.bin", "b.txt", "res.json"]) as st:
        for name, data in payload.items():
            io.atomic_write_bytes(st / name, data)
        io.atomic_write_json(st / "res.json", {"run": run, "files": io.file_manifest(st, payload)})
