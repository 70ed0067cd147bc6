"""opt: one field of a MATLAB options struct, given as an object (``opts.name``) or a dict."""
from __future__ import annotations


def opt(opts, name: str):
    """``opts.name`` for an options object or dict (MATLAB struct); ValueError if absent."""
    if isinstance(opts, dict):
        if name not in opts:
            raise ValueError(f"opts has no field '{name}'")
        return opts[name]
    if not hasattr(opts, name):
        raise ValueError(f"opts has no field '{name}'")
    return getattr(opts, name)
