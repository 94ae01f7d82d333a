#!/usr/bin/env python3
"""Convert an official SMPL-family `.pkl` model (SMPL, SMPL-H, SMPL-X, MANO) to `.npz`.

    python scripts/convert_model_pkl.py IN.pkl OUT.npz

Unpickling can run arbitrary code, and the official files also need the unmaintained `chumpy`
package and old `scipy.sparse` classes. This tool unpickles with a restricted unpickler that
runs nothing: it only rebuilds numpy arrays, stands inert placeholders in for chumpy arrays
(their value is pickled in `x`) and for scipy sparse matrices (densified here with numpy), and
refuses every other global, naming it. Neither chumpy nor scipy is imported.

The output holds the arrays under the file's own keys (v_template, f, J_regressor (dense),
weights, kintree_table, shapedirs, posedirs, hand / face keys...); entries that are not arrays
(strings such as 'bs_style', dicts such as 'joint2num') are skipped with a note. Only run it on
files from a source you trust to be what they claim; it never executes their contents.
"""

from __future__ import annotations

import argparse
import io
import pickle
import sys
from pathlib import Path

import numpy as np


class ConversionError(Exception):
    """The pickle holds something this converter will not rebuild, or no usable arrays."""


# --------------------------------------------------------------------------- inert stand-ins
class _Inert:
    """Records what the pickle says about an object; has no behaviour of its own."""

    qualified_name = "?"

    def __init__(self, *args, **kwargs) -> None:
        self.args = args
        self.state: object = None

    def __setstate__(self, state: object) -> None:
        self.state = state

    def state_dict(self) -> dict:
        state = self.state
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], dict):
            state = state[0]  # (dict, slot state) from classes with __slots__
        return state if isinstance(state, dict) else {}


class _ChumpyStandIn(_Inert):
    """A chumpy object; a plain `chumpy.ch.Ch` pickles its value in state['x']."""


class _SparseStandIn(_Inert):
    """A scipy.sparse CSC or CSR matrix: data, indices, indptr and shape are in its state."""

    compressed_axis = 1  # 1: CSC (indptr runs over columns), 0: CSR (over rows)


def _stand_in(base: type, module: str, name: str, **attributes) -> type:
    return type(name, (base,), {"qualified_name": f"{module}.{name}", "__module__": __name__, **attributes})


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """`_codecs.encode` as Python 3 pickles bytes at protocol 2; only the latin-1 form is accepted."""
    if not isinstance(text, str) or encoding.replace("-", "").replace("_", "").lower() not in ("latin1", "iso88591"):
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


def _numpy_multiarray():
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray
    return multiarray


def _allowed_globals() -> dict[tuple[str, str], object]:
    multiarray = _numpy_multiarray()
    allowed: dict[tuple[str, str], object] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
        ("__builtin__", "set"): set,  # chumpy objects pickle a set of names
        ("builtins", "set"): set,
        ("__builtin__", "frozenset"): frozenset,
        ("builtins", "frozenset"): frozenset,
    }
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = multiarray._reconstruct
        allowed[(module, "scalar")] = multiarray.scalar
    for kind, axis in (("csc", 1), ("csr", 0)):
        for module in (f"scipy.sparse.{kind}", f"scipy.sparse._{kind}", "scipy.sparse"):
            name = f"{kind}_matrix"
            allowed[(module, name)] = _stand_in(_SparseStandIn, module, name, compressed_axis=axis)
    return allowed


_CHUMPY_MODULES = ("chumpy", "chumpy.ch", "chumpy.ch_ops", "chumpy.reordering")


class RestrictedUnpickler(pickle.Unpickler):
    """Rebuilds numpy arrays and inert stand-ins; refuses every other global before it is touched."""

    def __init__(self, file) -> None:
        super().__init__(file, encoding="latin1")
        self._allowed = _allowed_globals()
        self._chumpy: dict[tuple[str, str], type] = {}

    def find_class(self, module: str, name: str) -> object:
        key = (module, name)
        if key in self._allowed:
            return self._allowed[key]
        if module in _CHUMPY_MODULES and name.isidentifier():
            if key not in self._chumpy:
                self._chumpy[key] = _stand_in(_ChumpyStandIn, module, name)
            return self._chumpy[key]
        raise pickle.UnpicklingError(
            f"refusing to load global '{module}.{name}': this converter only rebuilds numpy arrays, "
            "chumpy arrays and scipy CSC/CSR matrices, so the file is not a plain SMPL-family model"
        )

    def persistent_load(self, pid: object) -> object:
        raise pickle.UnpicklingError("refusing a persistent reference: not a plain SMPL-family model file")


def restricted_load(data: bytes) -> object:
    """Unpickle `data` with the restricted unpickler."""
    return RestrictedUnpickler(io.BytesIO(data)).load()


# --------------------------------------------------------------------------- from objects to arrays
def _to_array(value: object, key: str) -> np.ndarray | None:
    """A numeric array for `value`, or None for entries that are not arrays."""
    if isinstance(value, _ChumpyStandIn):
        state = value.state_dict()
        if "x" not in state:
            raise ConversionError(
                f"key '{key}' is a chumpy expression ({value.qualified_name}) whose value is not stored in the "
                "file; it would need chumpy to evaluate, which this converter does not run"
            )
        return _to_array(state["x"], key)
    if isinstance(value, _SparseStandIn):
        return _densify(value, key)
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "biuf":
            return value
        return None
    if isinstance(value, np.generic) and value.dtype.kind in "biuf":
        return np.asarray(value)
    return None


def _densify(matrix: _SparseStandIn, key: str) -> np.ndarray:
    state = matrix.state_dict()
    try:
        data = np.asarray(state["data"])
        indices = np.asarray(state["indices"], dtype=np.int64)
        indptr = np.asarray(state["indptr"], dtype=np.int64)
        shape = tuple(int(n) for n in state.get("_shape", state.get("shape")))
    except (KeyError, TypeError, ValueError) as error:
        raise ConversionError(f"key '{key}': the sparse matrix ({matrix.qualified_name}) lacks {error}") from error
    axis = matrix.compressed_axis
    if len(shape) != 2 or len(indptr) != shape[axis] + 1 or len(indices) != len(data) or indptr[-1] > len(data):
        raise ConversionError(f"key '{key}': inconsistent sparse matrix ({matrix.qualified_name}, shape {shape})")
    if indices.size and (indices.min() < 0 or indices.max() >= shape[1 - axis]):
        raise ConversionError(f"key '{key}': sparse matrix indices outside its shape {shape}")
    dense = np.zeros(shape, dtype=data.dtype if data.dtype.kind in "biuf" else np.float64)
    outer = np.repeat(np.arange(shape[axis]), np.diff(indptr))
    inner = indices[: indptr[-1]]
    rows, cols = (inner, outer) if axis == 1 else (outer, inner)
    np.add.at(dense, (rows, cols), data[: indptr[-1]])
    return dense


def convert(source: str | Path, target: str | Path, *, compress: bool = False, log=print) -> dict[str, np.ndarray]:
    """Convert `source` (.pkl) to `target` (.npz); returns the arrays written."""
    source, target = Path(source), Path(target)
    try:
        content = restricted_load(source.read_bytes())
    except pickle.UnpicklingError as error:
        raise ConversionError(f"{source}: {error}") from error
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as error:
        raise ConversionError(f"{source}: not a readable model pickle ({type(error).__name__}: {error})") from error
    if not isinstance(content, dict):
        raise ConversionError(f"{source}: holds a {type(content).__name__}, expected a dict of model arrays")
    arrays: dict[str, np.ndarray] = {}
    for key, value in content.items():
        key = key.decode("latin1") if isinstance(key, bytes) else str(key)
        array = _to_array(value, key)
        if array is None:
            log(f"note: skipping '{key}' ({_describe(value)}): not a numeric array")
            continue
        arrays[key] = np.ascontiguousarray(array)
    if not arrays:
        raise ConversionError(f"{source}: no numeric arrays found")
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "wb") as handle:  # a file handle keeps numpy from appending '.npz'
        (np.savez_compressed if compress else np.savez)(handle, **arrays)
    return arrays


def _describe(value: object) -> str:
    if isinstance(value, np.ndarray):
        return f"array of dtype {value.dtype}"
    if isinstance(value, _Inert):
        return value.qualified_name
    return type(value).__name__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="official model .pkl (SMPL, SMPL-H, SMPL-X, MANO)")
    parser.add_argument("target", help="output .npz")
    parser.add_argument("--compress", action="store_true", help="write a compressed .npz (smaller, slower to load)")
    args = parser.parse_args(argv)
    try:
        arrays = convert(args.source, args.target, compress=args.compress)
    except (ConversionError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.target}: " + ", ".join(f"{key} {tuple(value.shape)}" for key, value in arrays.items()))
    # Check the result the way the body model will read it.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    try:
        from core.model_files import BodyModelError, load_model_arrays
    except ImportError:
        return 0
    try:
        model = load_model_arrays(args.target)
    except BodyModelError as error:
        print(f"warning: the body model cannot load the result: {error}", file=sys.stderr)
        return 1
    print(f"ok: a {model.kind.name} model with {model.v_template.shape[0]} vertices, {len(model.parents)} joints, "
          f"{model.shapedirs.shape[-1]} shape components")
    return 0


if __name__ == "__main__":
    sys.exit(main())
