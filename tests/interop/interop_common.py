"""Helpers shared by the interop scripts: the qsteer binary, the scratch directory, table cells."""

import os
import shutil
import sys
import tempfile


def resolve_qsteer(path, prog):
    """The binary as an absolute path (or a command on PATH); None after printing why not."""
    if os.sep in path:
        path = os.path.abspath(path)
        if not os.access(path, os.X_OK):
            print(f"{prog}: qsteer binary not found or not executable: {path}", file=sys.stderr)
            return None
    elif shutil.which(path) is None:
        print(f"{prog}: {path} not on PATH", file=sys.stderr)
        return None
    return path


def scratch_dir(keep, prefix):
    """(directory, cleanup context or None): `keep` if given (created), else a temp directory."""
    if keep:
        os.makedirs(keep, exist_ok=True)
        return keep, None
    ctx = tempfile.TemporaryDirectory(prefix=prefix)
    return ctx.name, ctx


def fmt(v, spec):
    """`v` formatted with `spec`, or a right-aligned '-' of the same width for None."""
    width = int("".join(ch for ch in spec.split(".")[0] if ch.isdigit()) or 0)
    return "-".rjust(width) if v is None else format(v, spec)
