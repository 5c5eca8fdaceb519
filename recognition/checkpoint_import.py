"""Read MotionBERT's official checkpoint files into our models (docs/method.md §14).

Two layouts exist, both a dict saved with `torch.save`, keys often prefixed `module.` (DataParallel):
- pretrained backbone: `{"model_pos": {name: tensor}, "epoch", "lr", "optimizer", ...}` with DSTFormer
  names (no `backbone.` prefix);
- finetuned action model: `{"model": {name: tensor}, "epoch", "lr", "optimizer", "best_acc"}` with
  `backbone.*` and `head.*` names.

`load_motionbert_state` returns the tensors under our `ActionModel` names; `load_into` loads them
strictly, allowing only the missing keys the caller names.

`load_torch_file` is the one `torch.load` of the package (ours and foreign files alike). It reads with
`weights_only=True`; a file that needs full unpickling is only read when the caller passes
`allow_pickle=True`, after a warning naming the file and the globals `weights_only` refuses (a static
scan of the pickle with `pickletools`, nothing executed). An empty, truncated or non-checkpoint file is
a one-line `CheckpointError` that names the file and what to do.
"""

from __future__ import annotations

import io
import logging
import pickle
import pickletools
import tarfile
import zipfile
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import torch
from torch import Tensor, nn

from pipeline.state_dicts import compare_shapes

log = logging.getLogger(__name__)

PRETRAINED = "motionbert_pretrained"
ACTION = "motionbert_action"
_CLASSIFIER_KEY = "head.fc2.weight"


#: What to do about a checkpoint file that is broken; callers with a better remedy pass their own.
REMEDY = "retrain to recreate it (or copy it again from its source)"
_MAX_NAMES = 10  # globals listed in one message


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read, or whose tensors do not fit the model."""


class UnsafeCheckpointError(CheckpointError):
    """A well-formed torch file that only full unpickling (`allow_pickle=True`) can read."""


def load_torch_file(path: str | Path, *, allow_pickle: bool = False, remedy: str = REMEDY) -> Any:
    """`torch.load` a file on the CPU with `weights_only=True`, or fully unpickled if allowed.

    Args:
        path: a file written by `torch.save` (zip or legacy format).
        allow_pickle: if `weights_only=True` refuses the file, read it with full unpickling (runs code
            from the file: only for files you trust); a warning names the file and the refused globals.
        remedy: the advice that ends the message of an empty, truncated or unreadable file.

    Raises:
        CheckpointError: the file is missing, empty, truncated or not a torch file; the message names it.
        UnsafeCheckpointError: `weights_only=True` refuses it and `allow_pickle` is False; the message
            lists the refused globals.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: checkpoint file {'is a directory' if p.is_dir() else 'not found'}")
    size = p.stat().st_size
    if size == 0:
        raise CheckpointError(
            f"{p}: checkpoint file is empty (0 bytes), probably left by an interrupted write or copy; {remedy}"
        )
    problem = _file_problem(p)
    if problem is not None:
        raise CheckpointError(f"{p}: {problem}; {_advice(problem, remedy)}")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for one bad file; all become one line
        if isinstance(err, EOFError) or "EOF" in str(err):  # e.g. a legacy file cut inside its tensor bytes
            raise CheckpointError(
                f"{p}: checkpoint file is truncated ({size} bytes; {_first_line(err)}), "
                f"probably cut off while being written or copied; {remedy}"
            ) from err
        refused = isinstance(err, pickle.UnpicklingError) and "weights only load failed" in str(err).lower()
        if not refused:
            raise CheckpointError(f"{p}: cannot read checkpoint ({_first_line(err)}); {remedy}") from err
        names = unsafe_globals(p)
    if not allow_pickle:
        raise UnsafeCheckpointError(
            f"{p}: weights_only=True cannot read it: it references {_name_list(names)}; pass allow_pickle=True "
            "(train or evaluate --allow-pickle) only if you trust the file, since unpickling it can run arbitrary code"
        )
    log.warning(
        "%s: allow_pickle (--allow-pickle): trusting this file and unpickling it fully (weights_only=False), "
        "which can run arbitrary code from it; it references %s",
        p,
        _name_list(names),
    )
    try:
        return torch.load(p, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001
        raise CheckpointError(f"{p}: cannot unpickle checkpoint ({_first_line(err)}); {remedy}") from err


def unsafe_globals(path: str | Path) -> list[str]:
    """The globals ("module.name") that the pickle data of `path` references and `weights_only` refuses.

    A static scan with `pickletools.genops` (GLOBAL and STACK_GLOBAL opcodes), nothing is imported
    or run: the `data.pkl` of a zip checkpoint, or the pickles at the start of a legacy file. Sorted.
    """
    try:
        from torch import _weights_only_unpickler as wou

        allowed = set(wou._get_allowed_globals()) | set(wou._get_user_allowed_globals())
    except (ImportError, AttributeError):  # a private torch API: without it, list everything found
        allowed = set()
    found: set[str] = set()
    for stream in _pickle_streams(Path(path)):
        found |= _globals_in(stream)
    return sorted(found - allowed)


def _pickle_streams(p: Path) -> Iterator[IO[bytes]]:
    """The pickle data of a torch file: one `data.pkl` (zip), or the file itself (legacy, several pickles)."""
    if zipfile.is_zipfile(p):
        with zipfile.ZipFile(p) as z:
            members = [n for n in z.namelist() if n == "data.pkl" or n.endswith("/data.pkl")]
            if members:
                yield io.BytesIO(z.read(members[0]))
        return
    with open(p, "rb") as f:
        for _ in range(5):  # magic number, protocol, sys info, the object, storage keys; then raw bytes
            if not f.peek(1)[:1]:
                return
            yield f


def _globals_in(stream: IO[bytes]) -> set[str]:
    """GLOBAL/STACK_GLOBAL names of one pickle (reads `stream` up to its STOP opcode)."""
    names: set[str] = set()
    pushed: deque = deque(maxlen=2)  # the last two pushed values (str or None): STACK_GLOBAL's module, name
    memo: dict[int, str] = {}  # memoized strings only, by memo index
    memoized = 0
    for op, arg, _ in pickletools.genops(stream):
        if op.name in ("PROTO", "FRAME", "STOP"):
            continue
        if op.name in ("BINPUT", "LONG_BINPUT", "PUT", "MEMOIZE"):  # these store, they push nothing
            key = memoized if op.name == "MEMOIZE" else arg
            memoized += op.name == "MEMOIZE"
            if pushed and isinstance(pushed[-1], str):
                memo[key] = pushed[-1]
            continue
        value = None
        if op.name == "GLOBAL":
            names.add(arg.replace(" ", "."))
        elif op.name == "STACK_GLOBAL" and len(pushed) == 2 and all(isinstance(v, str) for v in pushed):
            names.add(f"{pushed[0]}.{pushed[1]}")
        elif op.name in ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE"):
            value = arg
        elif op.name in ("BINGET", "LONG_BINGET", "GET"):
            value = memo.get(arg)
        pushed.append(value)
    return names


def _file_problem(p: Path) -> str | None:
    """Why `p` cannot be a torch file (truncated, not a checkpoint), or None when it may be one."""
    with open(p, "rb") as f:
        head = f.read(8)
    if head.startswith(b"PK\x03\x04"):
        if not zipfile.is_zipfile(p):
            return (
                f"checkpoint file is truncated ({p.stat().st_size} bytes; its zip archive has no end record), "
                "probably cut off while being written or copied"
            )
        with zipfile.ZipFile(p) as z:
            if not any(n == "data.pkl" or n.endswith("/data.pkl") for n in z.namelist()):
                return "not a torch checkpoint (a zip archive without data.pkl)"
        return None
    if tarfile.is_tarfile(p):  # torch's pre-1.0 tar format: torch.load decides
        return None
    if head[:1] != b"\x80":  # torch.save's pickles start with a PROTO opcode
        return f"not a torch checkpoint (neither a zip archive nor a pickle stream; it starts with {head!r})"
    try:
        with open(p, "rb") as f:
            magic = [arg for op, arg, _ in pickletools.genops(f) if op.name.startswith("LONG")]
        if magic != [torch.serialization.MAGIC_NUMBER]:
            return "not a torch checkpoint (a pickle, but not one written by torch.save)"
        for stream in _pickle_streams(p):
            _globals_in(stream)
    except ValueError as err:  # pickletools: data that ends before STOP, an unknown opcode, a bad argument
        if any(m in str(err) for m in ("not enough data", "remain", "exhausted", "no newline")):
            return (
                f"checkpoint file is truncated ({p.stat().st_size} bytes; its pickle stream ends early), "
                "probably cut off while being written or copied"
            )
        return f"not a torch checkpoint (not a valid pickle stream: {_first_line(err)})"
    return None


def _advice(problem: str, remedy: str) -> str:
    return f"check the path, or {remedy}" if problem.startswith("not a torch") else remedy


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _name_list(names: list[str]) -> str:
    """'N globals that weights_only refuses: a, b, ...' (at most _MAX_NAMES shown)."""
    if not names:
        return "no global that a static scan finds refused (torch refused it while unpickling)"
    shown = ", ".join(names[:_MAX_NAMES]) + (f", ... (first {_MAX_NAMES} shown)" if len(names) > _MAX_NAMES else "")
    return f"{len(names)} global{'s' if len(names) > 1 else ''} that weights_only refuses: {shown}"


def load_motionbert_state(path: str | Path, *, allow_pickle: bool = False) -> tuple[dict[str, Tensor], str]:
    """Read an official MotionBERT file and return (state dict under ActionModel names, layout kind).

    Args:
        path: the `.bin`/`.pth` file.
        allow_pickle: if the file cannot be read with `weights_only=True`, read it with full
            unpickling (runs code from the file: only for files you trust).

    Returns:
        The state dict (keys `backbone.*`, plus `head.*` for the action layout, `module.` stripped)
        and the kind: "motionbert_pretrained" (key `model_pos`) or "motionbert_action" (key `model`).
    """
    path = Path(path)
    obj = load_torch_file(path, allow_pickle=allow_pickle)
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a dict with key 'model_pos' or 'model', got {type(obj).__name__}")
    layouts = [key for key in ("model_pos", "model") if key in obj]
    if len(layouts) != 1:
        raise CheckpointError(
            f"{path}: expected exactly one of the keys 'model_pos' (pretrained) or 'model' (action), "
            f"found top-level keys {sorted(map(str, obj))}"
        )
    layout = layouts[0]
    raw = obj[layout]
    if not isinstance(raw, Mapping) or not all(isinstance(v, Tensor) for v in raw.values()):
        raise CheckpointError(f"{path}: '{layout}' is not a mapping of names to tensors")

    state = {_strip_module(name): tensor for name, tensor in raw.items()}
    if layout == "model_pos":
        return {f"backbone.{name}": tensor for name, tensor in state.items()}, PRETRAINED
    return state, ACTION


def _strip_module(name: str) -> str:
    return name[len("module.") :] if name.startswith("module.") else name


def load_into(
    model: nn.Module,
    state: Mapping[str, Tensor],
    *,
    allow_missing: Iterable[str] = (),
    allow_missing_prefixes: Iterable[str] = (),
) -> list[str]:
    """Load `state` into `model` strictly, except for the missing keys the caller allows.

    Args:
        model: the model (e.g. an `ActionModel`).
        state: tensors under the model's names (from `load_motionbert_state`).
        allow_missing: model keys that may be absent from `state` (e.g. "backbone.mask_token").
        allow_missing_prefixes: prefixes of model keys that may be absent (e.g. "head." for a
            pretrained backbone file).

    Returns:
        The model keys left at their current values (the allowed missing ones), sorted.

    Raises:
        CheckpointError: listing the class-count mismatch, missing, unexpected and mis-shaped keys.
    """
    allow_missing = set(allow_missing)
    prefixes = tuple(allow_missing_prefixes)
    expected = model.state_dict()
    diff = compare_shapes(
        {k: tuple(v.shape) for k, v in expected.items()}, {k: tuple(v.shape) for k, v in state.items()}
    )
    left_out = [k for k in diff.missing if k in allow_missing or k.startswith(prefixes)]
    missing = [k for k in diff.missing if k not in left_out]
    unexpected = diff.unexpected
    mis_shaped = [f"{k}: model {want} vs checkpoint {got}" for k, got, want in diff.mis_shaped]

    problems = []
    if _CLASSIFIER_KEY in state and _CLASSIFIER_KEY in expected:
        got, want = state[_CLASSIFIER_KEY].shape[0], expected[_CLASSIFIER_KEY].shape[0]
        if got != want:
            problems.append(f"checkpoint has {got} classes, model has {want}")
    if missing:
        problems.append(f"missing keys ({len(missing)}): {missing}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {unexpected}")
    if mis_shaped:
        problems.append(f"shape mismatches ({len(mis_shaped)}): {mis_shaped}")
    if problems:
        raise CheckpointError("checkpoint does not fit the model: " + "; ".join(problems))

    model.load_state_dict(state, strict=not left_out)
    return left_out


def load_motionbert_into(model: nn.Module, path: str | Path, *, allow_pickle: bool = False) -> str:
    """Load an official MotionBERT file into an `ActionModel` with the usual allowances.

    A pretrained file may leave `head.*` untouched; a model with a mask token may lack
    `backbone.mask_token`. Returns the layout kind.
    """
    state, kind = load_motionbert_state(path, allow_pickle=allow_pickle)
    prefixes = ("head.",) if kind == PRETRAINED else ()
    left_out = load_into(model, state, allow_missing=("backbone.mask_token",), allow_missing_prefixes=prefixes)
    if left_out:
        log.info("%s (%s): %d model tensors keep their initial values: %s", path, kind, len(left_out), left_out)
    return kind
