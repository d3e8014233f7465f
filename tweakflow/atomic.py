"""Atomic file output: write under a temporary name, then rename.

A killed job never leaves a file that looks finished: the final name only
appears once the content is complete (``os.replace`` is atomic on POSIX
within one file system, which the temporary name in the same folder ensures).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import unicodedata

from .errors import OutputError

__all__ = ["atomic_output", "ascii_name"]


def ascii_name(name):
    """``name`` with its non-ASCII or non-printable characters made ASCII.

    Accented letters lose their accent (NFKD decomposition: ``é`` -> ``e``),
    any other such character becomes ``_``; an ASCII name is unchanged.
    """
    out = []
    for c in unicodedata.normalize("NFKD", name):
        if c.isascii() and c.isprintable():
            out.append(c)
        elif not unicodedata.combining(c):
            out.append("_")
    return "".join(out)


@contextlib.contextmanager
def atomic_output(path):
    """Yield a temporary path next to ``path``; rename it to ``path`` on success.

    The temporary file lives in a private hidden folder next to ``path`` and
    keeps the final base name, so writers that choose a format from the
    extension, or record the file name inside the file (stdatamodels'
    ``meta.filename``), see the final name; non-ASCII letters in it are
    transliterated (``ü`` -> ``u``, others -> ``_``, see `ascii_name`)
    because FITS headers hold ASCII only. On any exception the temporary
    file is removed and the exception propagates; ``path`` is left untouched.
    An `OSError` (disk full, no permission) becomes an `OutputError` naming
    ``path``.

    Parameters
    ----------
    path : str or os.PathLike
        Final output path.
    """
    path = os.fspath(path)
    folder, base = os.path.split(path)
    try:
        if folder:
            os.makedirs(folder, exist_ok=True)
        tmpdir = tempfile.mkdtemp(prefix=".tmp-", dir=folder or ".")
    except OSError as exc:
        raise OutputError(f"{path}: cannot be written ({exc.strerror or exc})") from exc
    tmp = os.path.join(tmpdir, ascii_name(base))
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputError(f"{path}: cannot be written ({exc.strerror or exc})") from exc
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def write_text(path, text):
    """Write ``text`` (UTF-8) to ``path`` atomically (`atomic_output`)."""
    with atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
