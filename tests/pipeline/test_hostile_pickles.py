"""Hostile pickles against `schema.load_pickle` and `python -m pipeline validate`.

Each file is built opcode by opcode (memory bombs, code execution, numpy state tricks, deep
nesting, shared references) and read in a fresh interpreter: it must fail with `SchemaError`
or `UnsafePickleError` in under a second (timed inside that interpreter, start-up not
counted), with a peak RSS under 200 MB, without running anything (a sentinel file the
payloads would create stays absent), and the CLI must print one short error line.

Peak RSS is VmHWM of the interpreter's own memory map, and for the CLI the `wait4` usage of
a child started by a small launcher: a child's `ru_maxrss` would include the RSS of the
process that forked it (this pytest process). The children run under a 4 GiB address-space
limit, so a regression fails with a different message instead of taking the machine's
memory. Positive cases: our own files, a PYSKL-style protocol-2 index with numpy 1 names and
float16, every protocol, shared references.
"""

from __future__ import annotations

import json
import os
import pickle
import resource
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline import schema
from pipeline.schema import SchemaError, UnsafePickleError
from tests.helpers import make_index, make_record

REPO = Path(__file__).resolve().parents[2]
MAX_SECONDS, MAX_RSS_MB = 1.0, 200
MA, NUMERIC = "numpy.core.multiarray", "numpy.core.numeric"  # numpy 1 names, as published files
N, T, F = pickle.NONE, pickle.NEWTRUE, pickle.NEWFALSE

# ------------------------------------------------------------------------------------------
# Opcode builders
# ------------------------------------------------------------------------------------------


def _int(n: int) -> bytes:
    if 0 <= n < 256:
        return pickle.BININT1 + bytes([n])
    if -(2**31) <= n < 2**31:
        return pickle.BININT + struct.pack("<i", n)
    b = n.to_bytes(n.bit_length() // 8 + 1, "little", signed=True)
    return pickle.LONG1 + bytes([len(b)]) + b if len(b) < 256 else pickle.LONG4 + struct.pack("<i", len(b)) + b


def _str(s: str) -> bytes:
    b = s.encode()
    return pickle.BINUNICODE + struct.pack("<I", len(b)) + b


def _bytes(b: bytes) -> bytes:
    return pickle.BINBYTES + struct.pack("<I", len(b)) + b


def _global(module: str, name: str) -> bytes:
    return pickle.GLOBAL + f"{module}\n{name}\n".encode()


def _tuple(*items: bytes) -> bytes:
    return pickle.MARK + b"".join(items) + pickle.TUPLE


def _call(func: bytes, *args: bytes) -> bytes:
    return func + _tuple(*args) + pickle.REDUCE


def _pickle(*body: bytes, proto: int = 2) -> bytes:
    return pickle.PROTO + bytes([proto]) + b"".join(body) + pickle.STOP


def _dtype_state(byteorder: str = "<", elsize: int = -1, align: int = -1, flags: int = 0) -> bytes:
    return _tuple(_int(3), _str(byteorder), N, N, N, _int(elsize), _int(align), _int(flags))


def _dtype(spec: str, state: bytes | None = None) -> bytes:
    """np.dtype(spec, False, True) + BUILD, as numpy pickles a dtype."""
    return _call(_global("numpy", "dtype"), _str(spec), F, T) + (state or _dtype_state()) + pickle.BUILD


def _array(shape: tuple, dtype: bytes, raw: bytes) -> bytes:
    """_reconstruct(ndarray, (0,), b'b') + BUILD (1, shape, dtype, False, raw), as numpy does."""
    empty = _call(_global(MA, "_reconstruct"), _global("numpy", "ndarray"), _tuple(_int(0)), _bytes(b"b"))
    return empty + _tuple(_int(1), _tuple(*map(_int, shape)), dtype, F, raw) + pickle.BUILD


def _memo_get(i: int) -> bytes:
    return pickle.LONG_BINGET + struct.pack("<I", i)


def _memo_put(i: int) -> bytes:
    return pickle.LONG_BINPUT + struct.pack("<I", i)


def _nested_via_memo(levels: int) -> bytes:
    """l0 = []; l(k+1) = [l(k)]: constant stack height, `levels` deep."""
    body = [pickle.EMPTY_LIST, _memo_put(0), pickle.POP]
    for k in range(1, levels):
        body += [pickle.EMPTY_LIST, _memo_get(k - 1), pickle.APPEND, _memo_put(k), pickle.POP]
    return b"".join(body) + _memo_get(levels - 1)


def _doubling_list(levels: int) -> bytes:
    """l0 = [None]; l(k+1) = [l(k), l(k)]: 2**levels paths through `levels` + 1 lists."""
    body = [pickle.EMPTY_LIST, N, pickle.APPEND, _memo_put(0), pickle.POP]
    for k in range(1, levels + 1):
        body += [pickle.MARK, _memo_get(k - 1), _memo_get(k - 1), pickle.LIST, _memo_put(k), pickle.POP]
    return b"".join(body) + _memo_get(levels)


def _index_around(split_value: bytes) -> bytes:
    """{"split": {"xsub_train": <split_value>}, "annotations": []}."""
    return (
        pickle.EMPTY_DICT
        + _str("split")
        + pickle.EMPTY_DICT
        + _str("xsub_train")
        + split_value
        + pickle.SETITEM
        + pickle.SETITEM
        + _str("annotations")
        + pickle.EMPTY_LIST
        + pickle.SETITEM
    )


def _cases(sentinel: str) -> dict[str, tuple[bytes, str]]:
    """case -> (pickle bytes, fragment the error must contain)."""
    big = 4_000_000_000
    f4_raw = _bytes(np.arange(2, dtype="<f4").tobytes())
    touch = _str(f"touch {sentinel}")
    return {
        # memory bombs through callables
        "bytearray_count": (
            _pickle(_call(_global("builtins", "bytearray"), _int(big))),
            "refusing to load global builtins.bytearray",
        ),
        "bytes_count": (_pickle(_call(_global("__builtin__", "bytes"), _int(big))), "refusing bytes() with 1"),
        "int_from_str": (_pickle(_call(_global("builtins", "int"), _str("9" * 100))), "global builtins.int"),
        "complex": (_pickle(_call(_global("builtins", "complex"), _int(1))), "global builtins.complex"),
        "frozenset": (_pickle(_call(_global("builtins", "frozenset"), pickle.EMPTY_LIST)), "global builtins.frozenset"),
        "array_huge_shape_tiny_buffer": (
            _pickle(_array((10**6, 10**6), _dtype("f4"), _bytes(b"abcd"))),
            "refusing array state: shape with 1000000000000 elements",
        ),
        "array_shape_buffer_mismatch": (
            _pickle(_array((1000,), _dtype("f4"), _bytes(b"abcd"))),
            "refusing array state: bytes",
        ),
        "array_overflowing_shape": (_pickle(_array((2**62, 2**62), _dtype("f4"), _bytes(b""))), "elements"),
        "reconstruct_huge_shape": (
            _pickle(
                _call(_global(MA, "_reconstruct"), _global("numpy", "ndarray"), _tuple(_int(10**10)), _bytes(b"b"))
            ),
            "refusing _reconstruct: shape with 10000000000",
        ),
        "reconstruct_object_typecode": (
            _pickle(_call(_global(MA, "_reconstruct"), _global("numpy", "ndarray"), _tuple(_int(0)), _bytes(b"O"))),
            "refusing _reconstruct(",
        ),
        "frombuffer_huge_shape": (
            _pickle(
                _call(_global(NUMERIC, "_frombuffer"), _bytes(b"abcd"), _dtype("f4"), _tuple(_int(10**9)), _str("C"))
            ),
            "refusing _frombuffer: shape with 1000000000",
        ),
        "scalar_wrong_size": (
            _pickle(_call(_global(MA, "scalar"), _dtype("f4"), _bytes(b"x" * 1000))),
            "refusing scalar(<f4, bytes",
        ),
        "encode_amplification": (
            _pickle(
                _str("x" * 1_000_000),
                _memo_put(0),
                pickle.POP,
                pickle.MARK,
                *[_call(_global("_codecs", "encode"), _memo_get(0), _str("latin1"))] * 50,
                pickle.LIST,
            ),
            "more than this file can hold",
        ),
        "encode_other_codec": (
            _pickle(_call(_global("_codecs", "encode"), _str("abc"), _str("unicode_escape"))),
            "refusing _codecs.encode(",
        ),
        # numpy dtype and state tricks
        "dtype_void_huge": (_pickle(_dtype("V2000000000")), "refusing dtype('V2000000000')"),
        "dtype_bytes_huge": (_pickle(_dtype("S2000000000")), "larger than this file can hold"),
        "dtype_object": (_pickle(_dtype("O8")), "refusing dtype('O8')"),
        "dtype_structured": (_pickle(_dtype("f4,O")), "refusing dtype('f4,O')"),
        "dtype_datetime": (_pickle(_dtype("M8")), "refusing dtype('M8')"),
        # numpy segfaults on this one: an object array whose list is shorter than its shape
        "object_array_short_list": (
            _pickle(_array((10**9,), _dtype("O8"), pickle.EMPTY_LIST + _int(1) + pickle.APPEND)),
            "refusing dtype('O8')",
        ),
        "dtype_flags_make_object": (
            _pickle(_array((2,), _dtype("f4", _dtype_state(flags=0x3F)), f4_raw)),
            "refusing dtype state",
        ),
        "dtype_itemsize_on_numeric": (
            _pickle(_dtype("f4", _dtype_state(elsize=10**6, align=4))),
            "refusing dtype state",
        ),
        "dtype_rebuilt_after_use": (
            _pickle(
                _dtype("S1", _dtype_state("|", 1, 1)),
                _memo_put(0),
                _array((4,), _memo_get(0), _bytes(b"abcd")),
                pickle.POP,
                _memo_get(0),
                _dtype_state("|", 10**6, 1),
                pickle.BUILD,
            ),
            "refusing BUILD on dtype",
        ),
        "array_rebuilt": (
            _pickle(
                _array((2,), _dtype("f4"), f4_raw),
                _tuple(_int(1), _tuple(_int(2)), _dtype("f4"), F, f4_raw),
                pickle.BUILD,
            ),
            "refusing BUILD on array",
        ),
        "build_on_dict": (_pickle(pickle.EMPTY_DICT, pickle.EMPTY_DICT, pickle.BUILD), "refusing BUILD on dict"),
        "setitem_on_array": (
            _pickle(_array((2,), _dtype("f4"), f4_raw), _int(0), _int(1), pickle.SETITEM),
            "refusing SETITEMS on array",
        ),
        "call_ndarray_class": (
            _pickle(_call(_global("numpy", "ndarray"), _tuple(_int(10**10)))),
            "refusing to call ndarray",
        ),
        "reconstruct_other_class": (
            _pickle(_call(_global(MA, "_reconstruct"), _global("numpy", "memmap"), _tuple(_int(0)), _bytes(b"b"))),
            "global numpy.memmap",
        ),
        "reconstruct_callable_as_class": (
            _pickle(_call(_global(MA, "_reconstruct"), _global("numpy", "dtype"), _tuple(_int(0)), _bytes(b"b"))),
            "refusing _reconstruct(",
        ),
        # code execution (the sentinel would appear)
        "os_system": (_pickle(_call(_global("os", "system"), touch)), "global os.system"),
        "posix_system": (_pickle(_call(_global("posix", "system"), touch)), "global posix.system"),
        "builtins_eval": (
            _pickle(_call(_global("builtins", "eval"), _str(f"open({sentinel!r}, 'w')"))),
            "global builtins.eval",
        ),
        "builtins_getattr": (
            _pickle(_call(_global("builtins", "getattr"), _global("numpy", "ndarray"), _str("__init__"))),
            "global builtins.getattr",
        ),
        "builtins_open": (
            _pickle(_call(_global("builtins", "open"), _str(sentinel), _str("w"))),
            "global builtins.open",
        ),
        "copyreg_reconstructor": (
            _pickle(_call(_global("copyreg", "_reconstructor"), _global("os", "system"))),
            "global copyreg._reconstructor",
        ),
        "numpy_load": (_pickle(_call(_global("numpy", "load"), _str(sentinel))), "global numpy.load"),
        "numpy_frombuffer": (
            _pickle(_call(_global("numpy", "frombuffer"), _bytes(b"abcd"))),
            "global numpy.frombuffer",
        ),
        "inst_opcode": (_pickle(pickle.MARK, touch, pickle.INST + b"os\nsystem\n"), "refusing INST"),
        "obj_opcode": (_pickle(pickle.MARK, _global("numpy", "ndarray"), _int(10**10), pickle.OBJ), "refusing INST"),
        "newobj_ndarray": (
            _pickle(_global("numpy", "ndarray"), _tuple(_tuple(_int(10**10))), pickle.NEWOBJ),
            "refusing INST",
        ),
        "ext_opcode": (_pickle(pickle.EXT1 + b"\x01"), "refusing INST"),
        # opcodes that declare huge lengths
        "bytearray8_huge": (
            pickle.PROTO + b"\x05" + pickle.BYTEARRAY8 + struct.pack("<Q", big) + b"abcd.",
            "BYTEARRAY8 of 4000000000 bytes",
        ),
        "binbytes8_huge": (pickle.PROTO + b"\x04" + pickle.BINBYTES8 + struct.pack("<Q", big) + b"abcd.", "EOFError"),
        "binunicode8_huge": (
            pickle.PROTO + b"\x04" + pickle.BINUNICODE8 + struct.pack("<Q", big) + b"abcd.",
            "EOFError",
        ),
        "long4_huge": (pickle.PROTO + b"\x02" + pickle.LONG4 + struct.pack("<i", 2**31 - 1) + b"abcd.", "EOFError"),
        "frame_huge": (
            pickle.PROTO + b"\x04" + pickle.FRAME + struct.pack("<Q", 2**62) + N + pickle.STOP,
            "record: expected a dict",
        ),
        "memo_index_huge": (_pickle(N, _memo_put(2**32 - 1)), "record: expected a dict"),
        "int_text_huge": (pickle.PROTO + b"\x02" + pickle.INT + b"9" * 1_000_000 + b"\n.", "ValueError"),
        # nesting, cycles, hashing and shared references
        "deep_lists_on_stack": (
            _pickle(pickle.EMPTY_LIST * 100_000, pickle.APPEND * 99_999),
            "nested more than 100 deep",
        ),
        "deep_lists_via_memo": (_pickle(_nested_via_memo(100_000)), "nested more than 100 deep"),
        "deep_tuples": (_pickle(N, pickle.TUPLE1 * 100_000), "nested more than 100 deep"),
        "mark_bomb": (_pickle(pickle.MARK * 100_000), "more than 100 open MARKs"),
        "deep_tuple_as_key": (
            _pickle(pickle.EMPTY_DICT, N, pickle.TUPLE1 * 100_000, N, pickle.SETITEM),
            "refusing a dict key or set item tuple",
        ),
        "big_int_as_key": (
            _pickle(pickle.EMPTY_DICT, _int(2**8_000_000), N, pickle.SETITEM),
            "refusing a dict key or set item int <int of",
        ),
        "list_in_frozenset": (
            _pickle(pickle.MARK, pickle.EMPTY_LIST, pickle.FROZENSET, proto=4),
            "refusing a dict key or set item list",
        ),
        "cycle": (_pickle(pickle.EMPTY_LIST, _memo_put(0), _memo_get(0), pickle.APPEND), "contains itself"),
        "doubling_lists_as_split": (_pickle(_index_around(_doubling_list(60))), "a list of frame_dir str"),
        "long_split_name": (
            _pickle(
                pickle.EMPTY_DICT,
                _str("split"),
                pickle.EMPTY_DICT,
                _str("n" * 1_000_000),
                N,
                pickle.SETITEM,
                pickle.SETITEM,
                _str("annotations"),
                pickle.EMPTY_LIST,
                pickle.SETITEM,
            ),
            "split['nnnn",
        ),
    }


CASES = list(_cases("/nonexistent"))

# ------------------------------------------------------------------------------------------
# Fresh-interpreter runs
# ------------------------------------------------------------------------------------------

_PROBE = textwrap.dedent("""
    import json, sys, time
    from pipeline import schema

    def peak_mb():  # VmHWM: this memory map's own peak, unlike ru_maxrss (see the module doc)
        try:
            with open("/proc/self/status") as fh:
                return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:")) / 1024
        except OSError:  # not Linux: not measured
            return None

    base = peak_mb()
    stage, error = "load", None
    start = time.perf_counter()
    try:
        obj = schema.load_pickle(sys.argv[1])
        stage = "validate"
        check = schema.validate_index if schema.is_index(obj) else schema.validate_record
        check(obj, source=sys.argv[1])
    except (schema.SchemaError, schema.UnsafePickleError) as exc:
        error = f"{type(exc).__name__}: {exc}"
    seconds = time.perf_counter() - start
    print(json.dumps({"stage": stage, "error": error, "seconds": seconds, "base_mb": base, "peak_mb": peak_mb()}))
""")
_ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))


def _probe(path: Path) -> dict:
    """load_pickle + validation of `path` in a fresh interpreter: outcome, seconds, RSS."""
    res = subprocess.run(
        [sys.executable, "-c", _PROBE, str(path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=_ENV,
        preexec_fn=_limit_memory,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout)


_LAUNCHER = textwrap.dedent("""
    import json, os, subprocess, sys, time
    with open(sys.argv[1], "w") as out, open(sys.argv[2], "w") as err:
        proc = subprocess.Popen(sys.argv[3:], stdout=out, stderr=err)
        deadline = time.monotonic() + 60
        while (done := os.wait4(proc.pid, os.WNOHANG))[0] == 0:
            if time.monotonic() > deadline:
                proc.kill()
                sys.exit("timed out")
            time.sleep(0.01)
    print(json.dumps({"rc": os.waitstatus_to_exitcode(done[1]), "peak_mb": done[2].ru_maxrss / 1024}))
""")


def _cli(path: Path, tmp: Path) -> tuple[int, str, str, float]:
    """`python -m pipeline validate path`: exit status, stdout, stderr, peak RSS in MB."""
    out, err = tmp / "cli.out", tmp / "cli.err"
    cmd = [sys.executable, "-c", _LAUNCHER, str(out), str(err), sys.executable, "-m", "pipeline", "validate", str(path)]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=_ENV, preexec_fn=_limit_memory, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    usage = json.loads(res.stdout)
    return usage["rc"], out.read_text(), err.read_text(), usage["peak_mb"]


@pytest.mark.parametrize("case", CASES)
def test_hostile_pickle_fails_fast_and_small(tmp_path, case):
    sentinel = tmp_path / "pwned"
    data, fragment = _cases(str(sentinel))[case]
    path = tmp_path / f"{case}.pkl"
    path.write_bytes(data)
    res = _probe(path)
    assert res["error"] is not None and fragment in res["error"], res
    assert res["seconds"] < MAX_SECONDS, res
    assert res["peak_mb"] is None or res["peak_mb"] < MAX_RSS_MB, res
    code, out, err, peak = _cli(path, tmp_path)
    lines = err.splitlines()
    assert code == 1 and out == "" and len(lines) == 1, err[-3000:]
    assert lines[0].startswith("error: ") and "Traceback" not in err and len(lines[0]) < 400, lines[0][:1000]
    assert fragment in lines[0] and peak < MAX_RSS_MB
    assert not sentinel.exists()


def test_load_pickle_error_types(tmp_path):
    """Refusals are UnsafePickleError ("refusing ..."); broken or truncated files SchemaError."""
    for case, cls in [
        ("bytearray_count", UnsafePickleError),
        ("deep_tuples", UnsafePickleError),
        ("bytearray8_huge", SchemaError),
        ("int_text_huge", SchemaError),
    ]:
        path = tmp_path / f"{case}.pkl"
        path.write_bytes(_cases(str(tmp_path / "pwned"))[case][0])
        with pytest.raises(cls) as err:
            schema.load_pickle(path)
        assert str(err.value).startswith(str(path)) and len(str(err.value)) < 400
        assert (cls is SchemaError) != ("refusing" in str(err.value))


@pytest.mark.parametrize(
    "name",
    [
        "bytearray",
        "bytes",
        "set",
        "frozenset",
        "complex",
        "int",
        "float",
        "str",
        "list",
        "dict",
        "tuple",
        "getattr",
        "type",
        "object",
    ],
)
def test_builtin_callables_take_no_arguments(tmp_path, name):
    """Containers and scalars come from opcodes; of builtins only an argument-less bytes() stays."""
    path = tmp_path / "b.pkl"
    path.write_bytes(_pickle(_call(_global("builtins", name), _int(7))))
    with pytest.raises(UnsafePickleError, match="refusing"):
        schema.load_pickle(path)
    path.write_bytes(_pickle(_call(_global("__builtin__", name))))
    if name == "bytes":
        assert schema.load_pickle(path) == b""
    else:
        with pytest.raises(UnsafePickleError, match="refusing"):
            schema.load_pickle(path)


# ------------------------------------------------------------------------------------------
# What must still load
# ------------------------------------------------------------------------------------------


def test_hand_built_arrays_load(tmp_path):
    """The builders above write what numpy writes: these load to the expected values."""
    raw = np.arange(6, dtype="<f4").tobytes()
    body = (
        pickle.MARK
        + _array((2, 3), _dtype("f4"), _bytes(raw))
        + _call(_global(NUMERIC, "_frombuffer"), _bytes(raw), _dtype("f4"), _tuple(_int(3), _int(2)), _str("F"))
        + _call(_global(MA, "scalar"), _dtype("f2"), _bytes(np.float16(1.5).tobytes()))
        + _array((2,), _dtype("U1", _dtype_state("<", 4, 4, 8)), _bytes("ab".encode("utf-32-le")))
        + _array((0,), _dtype("f2"), _call(_global("__builtin__", "bytes")))
        + pickle.LIST
    )
    path = tmp_path / "ok.pkl"
    path.write_bytes(_pickle(body))
    a, b, s, u, e = schema.load_pickle(path)
    np.testing.assert_array_equal(a, np.arange(6, dtype=np.float32).reshape(2, 3))
    np.testing.assert_array_equal(b, np.arange(6, dtype=np.float32).reshape(3, 2, order="F"))
    assert s == np.float16(1.5) and s.dtype == np.float16
    assert u.tolist() == ["a", "b"] and e.shape == (0,) and e.dtype == np.float16


def _check_cli_ok(path: Path, tmp: Path, clips: int) -> None:
    res = _probe(path)
    assert res["error"] is None and res["seconds"] < MAX_SECONDS, res
    assert res["peak_mb"] is None or res["peak_mb"] < MAX_RSS_MB, res
    code, out, err, _ = _cli(path, tmp)
    assert code == 0 and out.count("\n") == 1 and f"{clips} clips" in out, err


def test_our_files_load(tmp_path):
    index = make_index(6)
    index["label_names"] = ["a", "b", "c"]
    schema.write_index(index, tmp_path / "index.pkl")
    _check_cli_ok(tmp_path / "index.pkl", tmp_path, 6)
    schema.write_record(make_record(), tmp_path / "rec.pkl")
    assert schema.read_any(tmp_path / "rec.pkl")["frame_dir"] == "clip0"


def test_pyskl_protocol2_numpy1_float16_index_loads(tmp_path):
    """PYSKL's published layout: protocol 2, numpy.core names, _codecs.encode, float16, extra keys."""
    index = make_index(4)
    for ann in index["annotations"]:
        for k in ("fps", "person_ids", "estimator", "schema_version", "original_shape"):
            del ann[k]
        ann["keypoint"] = ann["keypoint"].astype(np.float16)
        ann["keypoint_score"] = ann["keypoint_score"].astype(np.float16)
        ann["img_shape"] = (1080, 1920)
        ann["raw_file"] = f"/data/{ann['frame_dir']}.avi"
    data = pickle.dumps(index, protocol=2).replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"numpy.core.multiarray\n_reconstruct" in data and b"_codecs\nencode" in data
    assert b"numpy._core" not in data
    path = tmp_path / "ntu60_hrnet.pkl"
    path.write_bytes(data)
    back = schema.read_index(path)
    for a, b in zip(back["annotations"], index["annotations"]):
        assert a["keypoint"].dtype == np.float16
        np.testing.assert_array_equal(a["keypoint"], b["keypoint"])
    _check_cli_ok(path, tmp_path, 4)


@pytest.mark.parametrize("protocol", [0, 1, 3, 4, 5])
def test_every_protocol_loads(tmp_path, protocol):
    index = make_index(3)
    index["extra"] = {
        "scalars": [np.float32(1.5), np.int64(-3), np.bool_(True)],
        "empty": np.zeros((0, 17)),
        "bytes": [b"", b"xy"],
        "big": 10**30,
        "strs": np.array(["ab", "c"]),
        "be": np.ones(2, ">f8"),
    }
    path = tmp_path / "p.pkl"
    path.write_bytes(pickle.dumps(index, protocol=protocol))
    back = schema.read_index(path)
    assert back["extra"]["scalars"] == [1.5, -3, True] and back["extra"]["bytes"] == [b"", b"xy"]
    assert back["extra"]["strs"].tolist() == ["ab", "c"] and back["extra"]["be"].tolist() == [1.0, 1.0]


def test_shared_array_is_validated_once(tmp_path):
    """5,000 records sharing one 680,000-value array: validation reads it once, not per record."""
    t = 20_000
    kp, sc = np.zeros((1, t, 17, 2), np.float32), np.zeros((1, t, 17), np.float32)
    anns = [
        {"frame_dir": f"c{i}", "total_frames": t, "img_shape": (8, 8), "label": 0, "keypoint": kp, "keypoint_score": sc}
        for i in range(5000)
    ]
    path = tmp_path / "shared.pkl"
    path.write_bytes(pickle.dumps({"split": {}, "annotations": anns}, protocol=4))
    assert path.stat().st_size < 5 * kp.nbytes
    _check_cli_ok(path, tmp_path, 5000)


def test_shared_references_walk_linearly(tmp_path):
    """2**60 paths through 61 shared lists in an extra key: loading walks each list once."""
    index = pickle.dumps(make_index(2), protocol=2)
    assert index.endswith(pickle.SETITEMS + pickle.STOP)
    extra = pickle.MARK + _str("laughs") + _doubling_list(60) + pickle.SETITEMS
    path = tmp_path / "laughs.pkl"
    path.write_bytes(index[:-1] + extra + pickle.STOP)
    start = time.perf_counter()
    back = schema.read_index(path)
    assert time.perf_counter() - start < MAX_SECONDS
    assert back["laughs"][0] is back["laughs"][1]
