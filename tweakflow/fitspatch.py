"""Writing a FITS file whose arrays are another file's: new headers, the data bytes copied.

A corrected JWST product differs from its input in its headers (the
primary and ``SCI`` keywords stdatamodels derives from the metadata) and
in its ``ASDF`` extension (the whole metadata tree, the GWCS with it); its
arrays are the input's. stdatamodels would re-encode every array (80 MB
for a 2048 x 2048 NIRCam image) to write the same bytes again. Here the
`~astropy.io.fits.HDUList` stdatamodels builds for the output
(`stdatamodels.fits_support.to_fits`, the headers and the ``ASDF``
extension it would write) is written header by header, and each array's
data block is copied from the input file byte for byte (in the kernel,
``os.copy_file_range``). A header that grows by some cards takes more
2880-byte blocks: the HDUs after it move, their bytes intact.

`plan` accepts an input only when the copy is provably the bytes the
full write would give; otherwise it says why, and the caller writes the
file in full:

* the input is an uncompressed FITS file of image HDUs (primary and
  ``IMAGE`` extensions, no tile-compressed ones) followed by one ``ASDF``
  binary table, the last HDU, the HDUs contiguous up to the end of the
  file;
* the output has the same HDUs in the same order (names and versions), and
  each array HDU the same data layout keywords as the input's
  (``BITPIX``, ``NAXISn``, ``PCOUNT``, ``GCOUNT``, ``BZERO``, ``BSCALE``,
  ``BLANK``): the array it holds was read from that HDU, and writing it
  back gives the input's bytes. Scaled data are accepted only as the
  unsigned-integer convention (``BZERO`` 2**(BITPIX-1), exact both
  ways), never ``BSCALE`` or ``BLANK`` (floating-point scaling does not
  give the same bytes back).

The arrays of the output list must be those read from the input,
unmodified (the caller's contract: only metadata change).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from io import BytesIO

from .errors import InputError, OutputError

__all__ = ["ASDF_EXTENSION", "BLOCK", "Plan", "plan", "write"]

#: FITS block size (bytes): headers and data areas are padded to it.
BLOCK = 2880

#: The extension stdatamodels keeps the metadata tree in.
ASDF_EXTENSION = "ASDF"

#: Keywords that fix how an HDU's data bytes are laid out and read.
_LAYOUT_KEYS = ("SIMPLE", "XTENSION", "BITPIX", "NAXIS", "PCOUNT", "GCOUNT", "GROUPS", "BZERO", "BSCALE", "BLANK", "EXTEND")

# bytes per read where copy_file_range is missing (not Linux) or refuses the
# pair of files (some file systems, old kernels): then through user space
_CHUNK = 1 << 22


@dataclass
class Plan:
    """How to write an output: its pieces in order, new bytes or spans of the source.

    ``pieces`` holds ``bytes`` (written as they are) and ``(offset, size)``
    tuples (``size`` bytes of the source from ``offset``); ``size`` is the
    output's size in bytes.
    """

    source: str
    pieces: list = field(default_factory=list)
    size: int = 0

    def add_bytes(self, data):
        self.pieces.append(bytes(data))
        self.size += len(data)

    def add_copy(self, offset, size):
        self.pieces.append((int(offset), int(size)))
        self.size += int(size)


def _header_bytes(header):
    """The bytes astropy writes for ``header`` (END card, padded to `BLOCK`)."""
    return header.tostring(sep="", endcard=True, padding=True).encode("ascii")


def _data_size(header):
    """Bytes of an image HDU's data, without padding (0 without data)."""
    naxis = int(header.get("NAXIS", 0))
    if naxis == 0:
        return 0
    n = abs(int(header["BITPIX"])) // 8 * int(header.get("GCOUNT", 1))
    count = 1
    for i in range(1, naxis + 1):
        count *= int(header[f"NAXIS{i}"])
    return n * (int(header.get("PCOUNT", 0)) + count)


def _padded(size):
    return -(-size // BLOCK) * BLOCK


def _layout(header):
    """The data-layout keywords of a header, with the NAXISn it has."""
    keys = list(_LAYOUT_KEYS) + [f"NAXIS{i}" for i in range(1, int(header.get("NAXIS", 0)) + 1)]
    return {k: header[k] for k in keys if k in header}


def _scaling_problem(layout):
    """Why copying the raw bytes could differ from re-encoding the array, or None."""
    bitpix = int(layout.get("BITPIX", 0))
    if "BLANK" in layout:
        return "BLANK"
    if float(layout.get("BSCALE", 1)) != 1:
        return f"BSCALE {layout['BSCALE']}"
    bzero = layout.get("BZERO", 0)
    if bzero != 0 and not (bitpix in (16, 32, 64) and bzero == 2 ** (bitpix - 1)):
        return f"BZERO {bzero} with BITPIX {bitpix}"
    return None


def _source_layout(src, path):
    """Why the source's HDUs cannot be patched, or None (see the module's conditions)."""
    from astropy.io import fits

    size = os.path.getsize(path)
    names = [h.name for h in src]
    if names.count(ASDF_EXTENSION) != 1 or names[-1] != ASDF_EXTENSION:
        return f"the {ASDF_EXTENSION} extension is not the one last HDU (HDUs: {', '.join(names)})"
    end = 0
    for i, hdu in enumerate(src):
        kind = type(hdu)
        last = i == len(src) - 1
        if (last and kind is not fits.BinTableHDU) or (not last and kind not in (fits.PrimaryHDU, fits.ImageHDU)):
            return f"HDU {i} ({hdu.name}) is a {kind.__name__}"
        info = src.fileinfo(i)
        if info["hdrLoc"] != end:
            return f"HDU {i} ({hdu.name}) does not follow the previous one"
        end = info["datLoc"] + info["datSpan"]
    if end != size:
        return f"{size - end} bytes after the last HDU"
    return None


def plan(hdulist, source):
    """How to write ``hdulist`` with the data bytes of ``source``, or why it cannot be.

    Parameters
    ----------
    hdulist : astropy.io.fits.HDUList
        The output as stdatamodels builds it (`stdatamodels.fits_support.to_fits`):
        image HDUs holding the arrays read from ``source``, then the
        ``ASDF`` extension. It is verified (``output_verify="exception"``)
        and given ``EXTEND`` as `astropy.io.fits.HDUList.writeto` would.
    source : str
        The input FITS file the arrays were read from.

    Returns
    -------
    (Plan, None) or (None, str)
        The plan (`write` writes it), or the reason the output must be
        written in full.
    """
    from astropy.io import fits

    with warnings.catch_warnings():
        # as stdatamodels writes its products
        warnings.filterwarnings("ignore", message="Card is too long")
        hdulist.verify("exception")
        hdulist.update_extend()
        with open(source, "rb") as f:
            if f.read(9) != b"SIMPLE  =":
                return None, "not a plain (uncompressed) FITS file"
        try:
            src = fits.open(source, mode="readonly", memmap=False, do_not_scale_image_data=True, lazy_load_hdus=False)
        except Exception as exc:  # what cannot be read raw cannot be proven safe to copy
            return None, f"its raw layout cannot be read ({type(exc).__name__}: {exc})"
        with src:
            problem = _source_layout(src, source)
            if problem:
                return None, problem
            return _plan_hdus(hdulist, src, source)


def _plan_hdus(hdulist, src, source):
    """`plan` once the source's layout is known to be patchable."""
    if [(h.name, h.ver, type(h)) for h in hdulist] != [(h.name, h.ver, type(h)) for h in src]:
        return None, "the output's HDUs are not the input's (" + ", ".join(h.name for h in hdulist) + ")"
    out = Plan(source)
    for i, (new, old) in enumerate(zip(hdulist[:-1], src[:-1])):
        new.update_header()
        layout = _layout(new.header)
        if layout != _layout(old.header):
            return None, f"HDU {i} ({new.name}): data layout {layout} differs from the input's {_layout(old.header)}"
        problem = _scaling_problem(layout)
        if problem:
            return None, f"HDU {i} ({new.name}): scaled data ({problem})"
        size = _data_size(new.header)
        info = src.fileinfo(i)
        if _padded(size) != info["datSpan"] or (size > 0) != (new.data is not None):
            return None, f"HDU {i} ({new.name}): the data area is not the input's"
        out.add_bytes(_header_bytes(new.header))
        if size:
            out.add_copy(info["datLoc"], size)
            out.add_bytes(b"\0" * (_padded(size) - size))
    out.add_bytes(_extension_bytes(hdulist[-1]))
    return out, None


def _extension_bytes(hdu):
    """The bytes astropy writes for extension ``hdu`` (header and data, padded)."""
    from astropy.io import fits

    buf = BytesIO()
    primary = fits.PrimaryHDU()
    fits.HDUList([primary, hdu]).writeto(buf, output_verify="exception")
    return buf.getvalue()[len(_header_bytes(primary.header)) :]


def _copy_range(src_fd, dst_fd, offset, size, name):
    """Append ``size`` bytes of ``src_fd`` (file ``name``) from ``offset`` to ``dst_fd``, in the kernel when it can."""
    done = 0
    in_kernel = getattr(os, "copy_file_range", None)  # Linux only
    try:
        while in_kernel is not None and done < size:
            n = in_kernel(src_fd, dst_fd, size - done, offset + done)
            if n == 0:
                break
            done += n
    except OSError:
        pass  # no in-kernel copy between these files: the rest through user space
    while done < size:
        chunk = os.pread(src_fd, min(_CHUNK, size - done), offset + done)
        if not chunk:
            raise InputError(f"{name}: ended while its data were copied (truncated or changed during the write)")
        _write_all(dst_fd, chunk)
        done += len(chunk)


def write(plan_, path):
    """Write the output ``path`` as ``plan_`` says (the caller makes it atomic).

    Raises
    ------
    tweakflow.errors.InputError
        When the source ends early (it changed since `plan` read it).
    tweakflow.errors.OutputError
        When the file written is not the planned size.
    """
    # ``path`` is the temporary file of the caller's atomic_output (tweakflow.atomic)
    with open(plan_.source, "rb") as src, open(path, "wb", buffering=0) as dst:
        for piece in plan_.pieces:
            if isinstance(piece, bytes):
                _write_all(dst.fileno(), piece)
            else:
                _copy_range(src.fileno(), dst.fileno(), *piece, plan_.source)
    if os.path.getsize(path) != plan_.size:
        raise OutputError(f"{path}: {os.path.getsize(path)} bytes written, {plan_.size} planned")


def _write_all(fd, data):
    """Write all of ``data`` to ``fd`` (``os.write`` may write part of it)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
