"""A restricted unpickler for the data contract's pickles: array data in, nothing else runs.

`restricted_loads` (what `pipeline.schema.load_pickle` calls) runs Python's pure-Python unpickler, with every way to run
code closed but this allow-list, each call's arguments checked before anything is allocated:

    numpy.core.multiarray._reconstruct(ndarray, shape, b"b")   (and numpy._core.*)
        only `ndarray` itself (no memmap, recarray, ...), typecode b"b", shape within bounds
    numpy.core.multiarray.scalar(dtype, bytes)                 len(bytes) == dtype.itemsize
    numpy.core.numeric._frombuffer(buf, dtype, shape, "C"|"F")   bytes or bytearray,
        len(buf) == prod(shape) * itemsize
    numpy.dtype(spec, align, copy)    spec a str of <= 16 chars; always a fresh copy; kinds
                                      b i u f c S U only: no object, void, structured,
                                      subarray or datetime dtypes
    _codecs.encode(str, "latin1")     how protocol 2 (PYSKL's files) stores bytes
    builtins.bytes()                  no arguments: how protocol 2 stores b""
    numpy.ndarray                     only as _reconstruct's argument, never called

Containers, str, int, float, bool and None come from opcodes, not globals; `set`, `frozenset`,
`bytearray`, `complex`, `getattr`, `eval`, `os.system`, `numpy.load`, ... are refused before
anything runs. REDUCE calls only the functions above; BUILD applies only to a dtype or array
they just made, once, with numpy's own state layout checked first (dtype flags, itemsize and
byte order; array shape, dtype and len(bytes) == prod(shape) * itemsize), because numpy's
`__setstate__` trusts its input (it segfaults on object arrays with a short list and makes
float32 an object dtype when told to). INST, OBJ, NEWOBJ and EXT are refused. Bounds: what
these callables create totals at most 4 x the file size + 1 MiB, and an array's element count
and a dtype's itemsize are held to what is left of that; BYTEARRAY8 is checked against the
bytes left before it allocates (the stock opcode allocates first); dict keys and set items are
scalars (str, bytes, numbers up to 64 bits, None), so hashing never recurses; at most
MAX_DEPTH (100) open MARKs; after loading, containers nested deeper than MAX_DEPTH and cycles
are refused (one walk, shared objects once). Other lengths (str, bytes, ints) come from the
file and are bounded by its size. A refusal raises `UnsafePickleError` ("refusing ..."), a
broken or truncated file `SchemaError`; messages never repr a value in full. The C unpickler
is not used: it allocates declared lengths before reading them, grows its memo to any
LONG_BINPUT index, and its BUILD cannot be checked."""

from __future__ import annotations

import importlib
import io
import math
import pickle
import struct
from collections.abc import Iterable, Mapping
from typing import IO, Any

import numpy as np


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle asks for a global, a call or a size outside the allow-list; nothing else ran."""


def clip(text: str, n: int) -> str:
    return text if len(text) <= n else f"{text[:n]}... ({len(text)} chars)"


def short_repr(v: Any, level: int = 0) -> str:
    """A repr of at most a few items and 60 characters per string, in bounded time."""
    if isinstance(v, (str, bytes)):
        return repr(v) if len(v) <= 60 else f"{v[:60]!r}... (len {len(v)})"
    if isinstance(v, int) and not isinstance(v, bool) and v.bit_length() > 64:
        return f"<int of {v.bit_length()} bits>"
    if v is None or isinstance(v, (bool, int, float, np.generic)):
        return repr(v)
    if isinstance(v, (list, tuple)) and level == 0 and len(v) <= 8:
        inner = ", ".join(short_repr(x, 1) for x in v) + ("," if type(v) is tuple and len(v) == 1 else "")
        return f"({inner})" if type(v) is tuple else f"[{inner}]"
    if isinstance(v, Mapping) and level == 0 and len(v) <= 4:
        return "{" + ", ".join(f"{short_repr(k, 1)}: {short_repr(x, 1)}" for k, x in v.items()) + "}"
    if isinstance(v, (list, tuple, set, frozenset, Mapping)):
        return f"<{len(v)} items>"
    return f"<{type(v).__name__}>"


def describe_value(v: Any) -> str:
    """`type value` for error messages; never a full repr (a file's value may be huge or deep)."""
    if isinstance(v, np.ndarray):
        return f"array {v.dtype} {list(v.shape)}"
    if isinstance(v, np.dtype):
        return f"dtype {v.str}"
    return f"{type(v).__name__} {short_repr(v)}"[:120]


MAX_DEPTH = 100  # containers nested in containers (and open MARKs); our files nest 4 deep
_ALLOC_FACTOR, _ALLOC_SLACK = 4, 1 << 20  # what the allowed callables may create, per file byte
_DTYPE_KINDS = "biufcSU"  # bool, ints, floats, complex, bytes, str: no object, void or datetime
_KEY_TYPES = (str, bytes, bool, float, type(None), np.generic)  # hashed in constant time


def _numpy_submodule(name: str):
    """Import numpy._core.X / numpy.core.X under whichever name this numpy provides."""
    for prefix in ("numpy._core", "numpy.core"):
        try:
            return importlib.import_module(f"{prefix}.{name}")
        except ImportError:
            continue
    raise UnsafePickleError(f"numpy submodule {name!r} not found")


# (module, name) as pickles spell them -> the checking method of RestrictedUnpickler
_CALLABLES = {
    **{(f"{pkg}.multiarray", "_reconstruct"): "_reconstruct" for pkg in ("numpy.core", "numpy._core")},
    **{(f"{pkg}.multiarray", "scalar"): "_scalar" for pkg in ("numpy.core", "numpy._core")},
    **{(f"{pkg}.numeric", "_frombuffer"): "_frombuffer" for pkg in ("numpy.core", "numpy._core")},
    ("numpy", "dtype"): "_dtype",
    ("_codecs", "encode"): "_encode",
    ("builtins", "bytes"): "_bytes",
    ("__builtin__", "bytes"): "_bytes",
}


def _refuse(what: str) -> UnsafePickleError:
    return UnsafePickleError(f"refusing {what}")


def _check_key(key: Any) -> None:
    """Dict keys and set items: scalars only, so hashing them never recurses or repeats work."""
    if isinstance(key, int) and not isinstance(key, bool):
        if key.bit_length() > 64:
            raise _refuse(f"a dict key or set item {describe_value(key)}")
    elif not isinstance(key, _KEY_TYPES):
        raise _refuse(f"a dict key or set item {describe_value(key)}: only str/bytes/numbers/None")


class RestrictedUnpickler(pickle._Unpickler):
    """Python's own (pure-Python) unpickler, with every way to call code closed but a few.

    The C unpickler cannot be made safe: it allocates a BYTEARRAY8/BINBYTES8 length before
    reading it, grows its memo to any LONG_BINPUT index, and its BUILD calls `__setstate__`
    of whatever is on the stack. Here REDUCE calls only the checking methods below, BUILD
    applies only to the dtypes and arrays they made (once, checked), INST/OBJ/NEWOBJ are
    refused, and `load` refuses cycles and nesting past MAX_DEPTH. See the module docstring.

    Args:
        file: binary file to read.
        max_bytes: bytes the allowed callables may create in all (`load_pickle`: 4 x file + 1 MiB).
    """

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file: IO[bytes], *, max_bytes: int):
        super().__init__(file)
        self._left = max_bytes
        self._buildable: dict[int, Any] = {}  # id -> fresh dtype/array that BUILD may set once
        self._calls = {attr: getattr(self, attr) for attr in set(_CALLABLES.values())}
        self._numpy = {
            "_reconstruct": _numpy_submodule("multiarray")._reconstruct,
            "scalar": _numpy_submodule("multiarray").scalar,
            "_frombuffer": _numpy_submodule("numeric")._frombuffer,
        }

    def load(self) -> Any:
        obj = super().load()
        _check_nesting(obj)
        return obj

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("numpy", "ndarray"):
            return np.ndarray  # only ever an argument of _reconstruct: REDUCE never calls it
        attr = _CALLABLES.get((module, name))
        if attr is None:
            raise _refuse(f"to load global {module[:80]}.{name[:80]}: not on the allow-list")
        return self._calls[attr]

    # --- the allowed callables: arguments checked before anything is allocated --------------

    def _charge(self, nbytes: int, what: str) -> None:
        if nbytes > self._left:
            raise _refuse(f"{what}: {nbytes} bytes is more than this file can hold")
        self._left -= nbytes

    def _count(self, shape: Any, what: str) -> int:
        """Elements in `shape`, a tuple of ints >= 0 whose product the file could hold."""
        if type(shape) is not tuple or len(shape) > 32 or any(type(s) is not int or s < 0 for s in shape):
            raise _refuse(f"{what}: shape {describe_value(shape)}")
        count = math.prod(shape)
        if count > self._left:
            raise _refuse(f"{what}: shape with {count} elements is more than this file can hold")
        return count

    def _use_dtype(self, dtype: Any, what: str) -> np.dtype:
        """A plain numeric/str dtype equal to its canonical form; BUILD can no longer change it."""
        if not isinstance(dtype, np.dtype):
            raise _refuse(f"{what}: dtype {describe_value(dtype)}")
        self._buildable.pop(id(dtype), None)
        ok = dtype.kind in _DTYPE_KINDS and dtype.fields is None and dtype.subdtype is None
        if ok:
            ref = np.dtype(dtype.str)
            ok = (
                dtype.itemsize > 0
                and dtype == ref
                and dtype.flags == ref.flags
                and dtype.alignment == ref.alignment
                and not dtype.hasobject
            )
        if not ok:
            raise _refuse(f"{what}: dtype {dtype.str[:40]} (only plain {_DTYPE_KINDS} dtypes)")
        return dtype

    def _reconstruct(self, cls: Any, shape: Any, typecode: Any) -> np.ndarray:
        if cls is not np.ndarray or typecode not in (b"b", "b"):
            raise _refuse(f"_reconstruct({describe_value(cls)}, ..., {describe_value(typecode)})")
        self._charge(self._count(shape, "_reconstruct"), "_reconstruct")
        arr = self._numpy["_reconstruct"](np.ndarray, shape, b"b")
        self._buildable[id(arr)] = arr
        return arr

    def _scalar(self, dtype: Any, data: Any) -> np.generic:
        dtype = self._use_dtype(dtype, "scalar")
        if type(data) is not bytes or len(data) != dtype.itemsize:
            raise _refuse(f"scalar({dtype.str}, {describe_value(data)})")
        self._charge(len(data), "scalar")
        return self._numpy["scalar"](dtype, data)

    def _frombuffer(self, buf: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
        dtype = self._use_dtype(dtype, "_frombuffer")
        count = self._count(shape, "_frombuffer")
        if type(buf) not in (bytes, bytearray) or len(buf) != count * dtype.itemsize or order not in ("C", "F"):
            raise _refuse(
                f"_frombuffer({describe_value(buf)}, {dtype.str}, {describe_value(shape)}, {describe_value(order)})"
            )
        self._charge(len(buf), "_frombuffer")
        return self._numpy["_frombuffer"](buf, dtype, shape, order)

    def _dtype(self, spec: Any, align: Any = False, copy: Any = False) -> np.dtype:
        if type(spec) is not str or len(spec) > 16 or type(align) is not bool:
            raise _refuse(f"dtype({describe_value(spec)}, {describe_value(align)})")
        dtype = np.dtype(spec, align, True)  # always a copy: BUILD must never alter numpy's own
        if dtype.kind not in _DTYPE_KINDS or dtype.fields is not None or dtype.subdtype is not None:
            raise _refuse(f"dtype({spec!r}): only plain {_DTYPE_KINDS} dtypes")
        if dtype.itemsize > self._left:
            raise _refuse(f"dtype({spec!r}): items larger than this file can hold")
        self._buildable[id(dtype)] = dtype
        return dtype

    def _encode(self, text: Any, encoding: Any = "utf-8", errors: Any = "strict") -> bytes:
        if type(text) is not str or encoding not in ("latin1", "latin-1") or errors != "strict":
            raise _refuse(
                f"_codecs.encode({describe_value(text)}, {describe_value(encoding)}, {describe_value(errors)})"
            )
        self._charge(len(text), "_codecs.encode")
        return text.encode("latin1")

    def _bytes(self, *args: Any) -> bytes:
        if args:  # protocol 2 writes b"" as bytes(); anything else would be a count or a copy
            raise _refuse(f"bytes() with {len(args)} arguments")
        return b""

    # --- opcodes: overridden where the stock ones would call, allocate, nest or hash ---------

    def _load_reduce(self) -> None:
        args = self.stack.pop()
        func = self.stack[-1]
        if not any(func is f for f in self._calls.values()) or type(args) is not tuple:
            name = func.__name__ if isinstance(func, type) else type(func).__name__
            raise _refuse(f"to call {name[:80]}: REDUCE calls only the allow-listed functions")
        self.stack[-1] = func(*args)

    def _load_build(self) -> None:
        state = self.stack.pop()
        inst = self.stack[-1]
        if self._buildable.pop(id(inst), None) is not inst:
            raise _refuse(f"BUILD on {describe_value(inst)}: only a fresh numpy dtype or array")
        if isinstance(inst, np.dtype):
            self._build_dtype(inst, state)
        else:
            self._build_array(inst, state)

    def _build_dtype(self, dtype: np.dtype, state: Any) -> None:
        # (version, byteorder, subarray, names, fields, itemsize, alignment, flags), numpy's layout
        ok = type(state) is tuple and len(state) == 8 and state[0] == 3 and state[1] in ("<", ">", "|", "=")
        ok = ok and state[2:5] == (None, None, None) and all(type(v) is int for v in state[5:])
        if ok and dtype.kind in "SU":
            ok = 0 < state[5] <= self._left and state[6] in (1, 4) and state[7] == dtype.flags
        elif ok:
            ok = state[5:] == (-1, -1, dtype.flags)
        if not ok:
            raise _refuse(f"dtype state {describe_value(state)} for {dtype.str}")
        dtype.__setstate__(state)
        self._use_dtype(dtype, "dtype state")

    def _build_array(self, arr: np.ndarray, state: Any) -> None:
        # (version, shape, dtype, is_fortran, raw bytes), numpy's layout
        if type(state) is not tuple or len(state) != 5 or state[0] != 1 or type(state[3]) is not bool:
            raise _refuse(f"array state {describe_value(state)}")
        count = self._count(state[1], "array state")
        dtype = self._use_dtype(state[2], "array state")
        raw = state[4]
        if type(raw) is not bytes or len(raw) != count * dtype.itemsize:
            raise _refuse(f"array state: {describe_value(raw)} for {count} x {dtype.str}")
        self._charge(len(raw), "array state")
        arr.__setstate__(state)

    def _load_refused(self) -> None:
        raise _refuse("INST/OBJ/NEWOBJ/EXT: objects are built only by the allow-listed callables")

    def _load_mark(self) -> None:
        if len(self.metastack) >= MAX_DEPTH:
            raise _refuse(f"more than {MAX_DEPTH} open MARKs")
        super().load_mark()

    def _load_bytearray8(self) -> None:
        (n,) = struct.unpack("<Q", self.read(8))
        data = self.read(n)  # reads what is there; the stock opcode allocates n first
        if len(data) != n:
            raise pickle.UnpicklingError(f"BYTEARRAY8 of {n} bytes, only {len(data)} left")
        self.append(bytearray(data))

    def _load_append(self) -> None:
        value = self.stack.pop()
        if type(self.stack[-1]) is not list:
            raise _refuse(f"APPEND to {describe_value(self.stack[-1])}")
        self.stack[-1].append(value)

    def _load_appends(self) -> None:
        items = self.pop_mark()
        if type(self.stack[-1]) is not list:
            raise _refuse(f"APPENDS to {describe_value(self.stack[-1])}")
        self.stack[-1].extend(items)

    def _set_items(self, target: Any, items: list) -> None:
        if type(target) is not dict or len(items) % 2:
            raise _refuse(f"SETITEMS on {describe_value(target)} with {len(items)} values")
        for i in range(0, len(items), 2):
            _check_key(items[i])
            target[items[i]] = items[i + 1]

    def _load_setitem(self) -> None:
        value, key = self.stack.pop(), self.stack.pop()
        self._set_items(self.stack[-1], [key, value])

    def _load_setitems(self) -> None:
        items = self.pop_mark()
        self._set_items(self.stack[-1], items)

    def _load_dict(self) -> None:
        items = self.pop_mark()
        self.append({})
        self._set_items(self.stack[-1], items)

    def _load_additems(self) -> None:
        items = self.pop_mark()
        if type(self.stack[-1]) is not set:
            raise _refuse(f"ADDITEMS to {describe_value(self.stack[-1])}")
        for item in items:
            _check_key(item)
        self.stack[-1].update(items)

    def _load_frozenset(self) -> None:
        items = self.pop_mark()
        for item in items:
            _check_key(item)
        self.append(frozenset(items))

    for _op, _fn in [
        (pickle.REDUCE, _load_reduce),
        (pickle.BUILD, _load_build),
        (pickle.MARK, _load_mark),
        (pickle.INST, _load_refused),
        (pickle.OBJ, _load_refused),
        (pickle.NEWOBJ, _load_refused),
        (pickle.NEWOBJ_EX, _load_refused),
        (pickle.EXT1, _load_refused),
        (pickle.EXT2, _load_refused),
        (pickle.EXT4, _load_refused),
        (pickle.BYTEARRAY8, _load_bytearray8),
        (pickle.APPEND, _load_append),
        (pickle.APPENDS, _load_appends),
        (pickle.SETITEM, _load_setitem),
        (pickle.SETITEMS, _load_setitems),
        (pickle.DICT, _load_dict),
        (pickle.ADDITEMS, _load_additems),
        (pickle.FROZENSET, _load_frozenset),
    ]:
        dispatch[_op[0]] = _fn
    del _op, _fn


def _children(obj: Any) -> Iterable | None:
    t = type(obj)
    if t is dict:
        return obj.values()  # keys are scalars (_check_key)
    return obj if t in (list, tuple, set, frozenset) else None


def _check_nesting(root: Any) -> None:
    """Refuse cycles and containers nested deeper than MAX_DEPTH, walking each object once."""
    if _children(root) is None:
        return
    height: dict[int, int] = {}  # id -> height of a container walked to the end
    on_path = {id(root)}
    path = [(root, iter(_children(root)), [0])]  # container, its items, tallest item so far
    while path:
        obj, items, tallest = path[-1]
        for item in items:
            kids = _children(item)
            if kids is None:
                continue
            if id(item) in on_path:
                raise _refuse("a container that contains itself")
            h = height.get(id(item))
            if h is None:
                if len(path) >= MAX_DEPTH:
                    raise _refuse(f"containers nested more than {MAX_DEPTH} deep")
                on_path.add(id(item))
                path.append((item, iter(kids), [0]))
                break
            if len(path) + h > MAX_DEPTH:
                raise _refuse(f"containers nested more than {MAX_DEPTH} deep")
            tallest[0] = max(tallest[0], h)
        else:
            path.pop()
            on_path.discard(id(obj))
            height[id(obj)] = tallest[0] + 1
            if path:
                path[-1][2][0] = max(path[-1][2][0], tallest[0] + 1)


def restricted_loads(data: bytes) -> Any:
    """Unpickle `data` with the allow-list and bounds above (creations capped at 4 x len(data) + 1 MiB).

    Raises:
        UnsafePickleError: a forbidden global, call, size or nesting (nothing outside the list ran).
        Exception: any other unpickling failure of a corrupt or truncated stream.
    """
    return RestrictedUnpickler(io.BytesIO(data), max_bytes=_ALLOC_FACTOR * len(data) + _ALLOC_SLACK).load()
