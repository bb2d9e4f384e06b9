"""Compile the lab's .proto files (lab/hosts/protos/) and import the generated code.

    import labproto
    pb = labproto.load()          # pb.health_pb2, pb.health_pb2_grpc, pb.hello_pb2, ...

Generated code is never committed: it goes to $LAB_GEN_DIR (default build/lab/gen)
in a directory named after a hash of the protos and the protobuf version, made by
`/usr/bin/python3 -m grpc_tools.protoc` and renamed into place atomically, so
concurrent first runs (a server and a client starting together) cannot see a
half-written module, and an edited .proto is recompiled on next use.
"""
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import types
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTOS = HERE / "protos"
NAMES = ("health", "hello")


def gen_root():
    env = os.environ.get("LAB_GEN_DIR")
    return Path(env) if env else HERE.parents[1] / "build" / "lab" / "gen"


def load(gen_dir=None):
    """Return a namespace with <name>_pb2 and <name>_pb2_grpc for each lab proto."""
    import google.protobuf
    files = [PROTOS / f"{n}.proto" for n in NAMES]
    digest = hashlib.sha256(google.protobuf.__version__.encode())
    for f in files:
        digest.update(f.name.encode() + b"\0" + f.read_bytes())
    root = Path(gen_dir) if gen_dir else gen_root()
    out = root / digest.hexdigest()[:16]
    if not out.is_dir():
        root.mkdir(parents=True, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=".tmp-", dir=root)
        try:
            res = subprocess.run(
                [sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTOS}",
                 f"--python_out={tmp}", f"--grpc_python_out={tmp}", *map(str, files)],
                capture_output=True, text=True)
            if res.returncode != 0:
                raise RuntimeError(f"protoc failed: {res.stderr.strip()}")
            os.chmod(tmp, 0o755)  # mkdtemp makes it private; other users import it too
            try:
                os.rename(tmp, out)
            except OSError:  # another process got there first: use its copy
                pass
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    if str(out) not in sys.path:
        sys.path.insert(0, str(out))
    ns = types.SimpleNamespace()
    for n in NAMES:
        setattr(ns, f"{n}_pb2", __import__(f"{n}_pb2"))
        setattr(ns, f"{n}_pb2_grpc", __import__(f"{n}_pb2_grpc"))
    return ns
