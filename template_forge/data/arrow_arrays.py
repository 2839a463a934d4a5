"""numpy ↔ pyarrow for the flat integer columns tforge writes, zero-copy both ways.

``pa.array(ndarray)`` and ``Array.to_numpy()`` import pandas on their first call (pyarrow
checks whether the value is a pandas object), which costs about 0.2 s of every command's
start and is needed by nothing here; building arrays from buffers and viewing buffers with
``np.frombuffer`` does the same work without it.
"""

from __future__ import annotations

import numpy as np

_INTEGERS = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")


def array(values: np.ndarray, type=None):
    """A pyarrow array of a 1-D integer ndarray (its buffer, not a copy), optionally cast to ``type``.

    Examples:
        >>> import pyarrow as pa
        >>> array(np.array([1, 2, 3], dtype=np.int64), pa.int32()).to_pylist()
        [1, 2, 3]
    """
    import pyarrow as pa

    values = np.ascontiguousarray(values)
    if type is not None:
        values = values.astype(np.dtype(str(type)), copy=False)
    if values.dtype.name not in _INTEGERS or values.ndim != 1:
        raise TypeError(f"expected a 1-D integer array, found {values.dtype} × {values.shape}")
    return pa.Array.from_buffers(pa.from_numpy_dtype(values.dtype), len(values), [None, pa.py_buffer(values)])


def list_array(offsets: np.ndarray, values: np.ndarray):
    """A list array: row ``k`` is ``values[offsets[k]:offsets[k + 1]]`` (int32 offsets)."""
    import pyarrow as pa

    return pa.ListArray.from_arrays(array(offsets.astype(np.int32, copy=False)), array(values))


def view(arr) -> np.ndarray:
    """A read-only ndarray over a pyarrow integer array without nulls (chunked ones are joined).

    Examples:
        >>> view(array(np.arange(5, dtype=np.int32))[1:4]).tolist()
        [1, 2, 3]
    """
    chunks = getattr(arr, "chunks", None)
    if chunks is not None:
        parts = [view(c) for c in chunks]
        return parts[0] if len(parts) == 1 else np.concatenate(parts) if parts else np.zeros(0, np.dtype(str(arr.type)))
    name = str(arr.type)
    if name not in _INTEGERS or arr.null_count:
        return arr.to_numpy(zero_copy_only=True)
    dtype = np.dtype(name)
    buf = arr.buffers()[1]
    if buf is None:
        return np.zeros(0, dtype)
    out = np.frombuffer(buf, dtype=dtype, count=len(arr), offset=arr.offset * dtype.itemsize)
    out.flags.writeable = False  # a view of the (mapped) file, as to_numpy(zero_copy_only=True) gives
    return out
