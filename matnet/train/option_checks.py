"""Type and range checks for option values, MATLAB-tolerant.

MATLAB stores numbers as doubles and logicals as 0/1, so a count may arrive as
``4``, ``4.0``, ``np.float64(4)`` or a 1x1 array, a flag as ``True`` or ``1``, a list as
a list, tuple, range or row vector.  Each checker takes (option name, value), returns
the value in its plain Python form, or raises ValueError naming the option, the value
and what is allowed.
"""
from __future__ import annotations

import math
import numbers
import os
import sys


def fail(name: str, value, allowed: str):
    """Raise the one error every checker gives."""
    shown = repr(value)
    if len(shown) > 120:
        shown = shown[:117] + "..."
    raise ValueError(f"option {name}={shown} ({type(value).__name__}) is not allowed: {name} must be {allowed}")


def _is_array(v) -> bool:
    """A numpy array (numpy is not imported here: a value can only be one when numpy is
    loaded, and checking options must not load it, so that the command line stays light)."""
    np = sys.modules.get("numpy")
    return np is not None and isinstance(v, np.ndarray)


def _is_numpy_scalar(v) -> bool:
    np = sys.modules.get("numpy")
    return np is not None and isinstance(v, np.generic)


def _unwrap(v):
    """A 1-element numpy array or numpy scalar as a Python scalar; anything else as is."""
    if _is_array(v) and v.size == 1 and v.dtype.kind in "biuf":
        v = v.reshape(-1)[0]
    return v.item() if _is_numpy_scalar(v) else v


def _is_number(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def logical(name: str, value) -> bool:
    """true/false, or a number equal to 0 or 1 (MATLAB logical)."""
    v = _unwrap(value)
    if isinstance(v, bool):
        return v
    if _is_number(v) and v in (0, 1):
        return bool(v)
    fail(name, value, "true/false (or 0/1)")


def integer(minimum: int, allow_inf: bool = False):
    """A checker for a whole number >= ``minimum`` (4 or 4.0), or inf when allowed."""
    allowed = f"an integer >= {minimum}" + (" or inf" if allow_inf else "")

    def check(name: str, value):
        v = _unwrap(value)
        if _is_number(v):
            if allow_inf and v == math.inf:
                return math.inf
            if math.isfinite(v) and float(v).is_integer() and v >= minimum:
                return int(v)
        fail(name, value, allowed)
    return check


def real(minimum: float | None = None, maximum: float | None = None, above: bool = False):
    """A checker for a finite number in [minimum, maximum] (minimum excluded if ``above``)."""
    parts = []
    if minimum is not None:
        parts.append(f"{'>' if above else '>='} {minimum:g}")
    if maximum is not None:
        parts.append(f"<= {maximum:g}")
    allowed = "a finite number" + (" " + " and ".join(parts) if parts else "")

    def check(name: str, value):
        v = _unwrap(value)
        if _is_number(v) and math.isfinite(v):
            ok = minimum is None or (v > minimum if above else v >= minimum)
            if ok and (maximum is None or v <= maximum):
                return float(v)
        fail(name, value, allowed)
    return check


def text(name: str, value) -> str:
    """A string (a path may be given as a path object)."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, str):
        return value
    fail(name, value, "a string")


def nonempty_text(name: str, value) -> str:
    if isinstance(value, str) and value:
        return value
    fail(name, value, "a non-empty string")


def prefix(name: str, value) -> str:
    """A prefix that file names are appended to (a folder ends with its separator)."""
    if isinstance(value, str):
        return value
    fail(name, value, "a string (a folder needs its trailing separator, e.g. 'runs/')")


def one_of(*allowed: str):
    """One of the strings ``allowed``."""
    def check(name: str, value) -> str:
        if isinstance(value, str) and value in allowed:
            return value
        fail(name, value, "one of " + ", ".join(repr(a) for a in allowed))
    return check


def optional(check):
    """``check``, also allowing None (MATLAB's []; an empty string or list counts as [])."""
    def opt(name: str, value):
        if value is None or ((isinstance(value, (str, list, tuple)) or _is_array(value)) and len(value) == 0):
            return None
        return check(name, value)
    return opt


def _as_list(value):
    """A list from a list, tuple, range or vector; None for anything else."""
    if _is_array(value):
        return list(value.reshape(-1)) if value.ndim <= 1 or max(value.shape) == value.size else None
    if isinstance(value, (list, tuple, range)):
        return list(value)
    return None


def increasing_counts(name: str, value) -> list[int]:
    """A non-empty list of integers >= 1 in increasing order (e.g. recall@N's Ns)."""
    allowed = "a non-empty list of integers >= 1 in increasing order, e.g. [1, 5, 10]"
    items = _as_list(value)
    if not items:
        fail(name, value, allowed)
    out = []
    for x in items:
        x = _unwrap(x)
        if not (_is_number(x) and math.isfinite(x) and float(x).is_integer() and x >= 1):
            fail(name, value, allowed)
        out.append(int(x))
    if any(b <= a for a, b in zip(out, out[1:])):
        fail(name, value, allowed)
    return out


def positive_reals(name: str, value) -> list[float]:
    """A (possibly empty) list of finite numbers > 0; one number counts as a list of one."""
    allowed = "a list of finite numbers > 0 (or empty)"
    if value is None:
        return []
    items = _as_list(value)
    if items is None:
        items = [value]
    out = []
    for x in items:
        x = _unwrap(x)
        if not (_is_number(x) and math.isfinite(x) and x > 0):
            fail(name, value, allowed)
        out.append(float(x))
    return out


def names(name: str, value) -> list[str]:
    """Layer names: a list (cell) of strings, one string, or empty."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    items = _as_list(value)
    if items is None or not all(isinstance(x, str) for x in items):
        fail(name, value, "a list of layer names (strings), or empty")
    return [str(x) for x in items]


def layer(name: str, value):
    """A layer: its 1-based index, its name, or None."""
    v = _unwrap(value)
    if v is None or isinstance(v, str) and v:
        return v
    if _is_number(v) and math.isfinite(v) and float(v).is_integer() and v >= 1:
        return int(v)
    fail(name, value, "a 1-based layer index (integer >= 1) or a layer name")
