"""Fuzz the image reader: randomly corrupted JWST FITS files give only our errors.

A few hundred corrupted copies of one small synthetic ``*_cal.fits`` file
(truncated, bytes flipped, header cards broken) are fed to
`tweakflow.io.read_image` in a worker process, each under a time limit. The
reader must either succeed or raise a `~tweakflow.errors.TweakflowError`; a
library exception escaping, a hang, or a change to the file fails the test.
The corruptions are drawn from a fixed seed, so a failure is reproducible.
"""

import concurrent.futures as cf
import multiprocessing
import os
import traceback

import numpy as np
import pytest

SEED = 20260309
N_TRUNCATED = 80
N_FLIPPED = 140
N_HEADER = 120
N_YAML = 60
#: per-file limit (s); the first file also pays for importing asdf/gwcs
TIMEOUT = 60.0


def read_one(path, with_data, with_wcs):
    """Worker: read ``path``; return ("ok" | "clear" | "uncaught", detail)."""
    import warnings

    from astropy import log as astropy_log

    from tweakflow.errors import TweakflowError
    from tweakflow.io import read_image

    warnings.simplefilter("ignore")  # astropy warns about every odd card
    astropy_log.setLevel("ERROR")
    with open(path, "rb") as f:
        before = f.read()
    try:
        read_image(path, with_data=with_data, with_wcs=with_wcs)
        result = ("ok", "")
    except TweakflowError as exc:
        msg = str(exc)
        # a clear error names the file
        result = ("clear", msg) if path in msg else ("uncaught", f"message does not name the file: {msg}")
    except BaseException as exc:  # noqa: BLE001 - that is what we look for
        result = ("uncaught", "".join(traceback.format_exception(exc))[-3000:])
    with open(path, "rb") as f:
        if f.read() != before:
            result = ("uncaught", "the reader modified its input")
    return result


def _hdu_layout(path):
    """(header start, data start, data span) of every HDU."""
    from astropy.io import fits

    with fits.open(path) as hdul:
        layout = []
        for i in range(len(hdul)):
            info = hdul.fileinfo(i)
            layout.append((info["hdrLoc"], info["datLoc"], info["datSpan"]))
    return layout


def _card_offsets(raw, start, stop):
    """Byte offsets of the 80-character cards in ``raw[start:stop]`` (with their keyword)."""
    cards = []
    for off in range(start, stop, 80):
        key = raw[off : off + 8].decode("ascii", "replace").strip()
        cards.append((off, key))
        if key == "END":
            break
    return cards


def _card(key, value):
    return f"{key:<8}= {value:>20}".ljust(80)[:80].encode("ascii")


#: (keyword or None for any card, replacement value) for broken headers
_BAD_VALUES = [
    ("NAXIS", "3"), ("NAXIS", "999"), ("NAXIS", "-1"), ("NAXIS", "'two'"),
    ("NAXIS1", "-5"), ("NAXIS1", "0"), ("NAXIS1", "1000000000"), ("NAXIS1", "'abc'"), ("NAXIS1", "1.5"),
    ("NAXIS2", "999999"), ("NAXIS2", "0"),
    ("BITPIX", "7"), ("BITPIX", "'X'"), ("BITPIX", "64"), ("BITPIX", "-64"), ("BITPIX", "16"),
    ("XTENSION", "'FOO     '"), ("XTENSION", "'BINTABLE'"), ("XTENSION", "'IMAGE   '"), ("XTENSION", "'TABLE   '"),
    ("EXTNAME", "'DQ      '"), ("EXTNAME", "'OTHER   '"), ("EXTNAME", "'SCI     '"), ("EXTNAME", "'ASDF    '"),
    ("TFORM1", "'99999999B'"), ("TFORM1", "'12E     '"), ("TFORM1", "'garbage '"),
    ("TTYPE1", "'OTHER   '"), ("TFIELDS", "0"), ("TFIELDS", "7"),
    ("PCOUNT", "100000"), ("GCOUNT", "0"), ("GCOUNT", "-3"),
    ("BSCALE", "0"), ("BZERO", "'x'"), ("BZERO", "1e300"),
    ("SIMPLE", "F"), ("SIMPLE", "'yes'"),
    ("V2_REF", "'nan'"), ("ROLL_REF", "'north'"), ("DATE-OBS", "42"), ("TIME-OBS", "'25:61:61'"),
    ("EXPSTART", "'x'"), ("FILENAME", "1"), ("EXTVER", "'a'"),
]


def _corrupt_files(src, outdir, rng):
    """Write the corrupted copies of ``src``; return a list of (label, path)."""
    raw = open(src, "rb").read()
    size = len(raw)
    layout = _hdu_layout(src)
    headers = [(h, d) for h, d, _ in layout]
    asdf_start, asdf_span = layout[-1][1], layout[-1][2]
    files = []

    def add(label, data):
        path = os.path.join(outdir, f"{len(files):03d}_{label}_cal.fits")
        with open(path, "wb") as f:
            f.write(data)
        files.append((label, path))

    # truncated: anywhere, and at every HDU boundary (a file that looks whole)
    cuts = sorted({0, 1, 79, 80, 2880} | {h for h, _ in headers} | {d for _, d in headers})
    cuts += list(rng.integers(1, size, N_TRUNCATED - len(cuts)))
    for cut in cuts:
        add(f"trunc{int(cut)}", raw[: int(cut)])

    # flipped bytes: in a header, in the ASDF extension, anywhere
    for k in range(N_FLIPPED):
        buf = bytearray(raw)
        where = k % 3
        for _ in range(int(rng.integers(1, 12))):
            if where == 0:
                h, d = headers[int(rng.integers(len(headers)))]
                pos = int(rng.integers(h, d))
            elif where == 1:
                pos = int(rng.integers(asdf_start, asdf_start + asdf_span))
            else:
                pos = int(rng.integers(size))
            buf[pos] = int(rng.integers(256)) if rng.random() < 0.7 else buf[pos] ^ (1 << int(rng.integers(8)))
        add(f"flip{('hdr', 'asdf', 'any')[where]}", bytes(buf))

    # broken headers: a keyword's value replaced, END removed, a card of garbage
    for k in range(N_HEADER):
        buf = bytearray(raw)
        h, d = headers[int(rng.integers(len(headers)))]
        cards = _card_offsets(raw, h, d)
        mode = k % 4
        if mode in (0, 1):
            key, value = _BAD_VALUES[int(rng.integers(len(_BAD_VALUES)))]
            hits = [off for off, kw in cards if kw == key]
            if not hits:  # the keyword is in another HDU: use any HDU that has it
                hits = [off for hh, dd in headers for off, kw in _card_offsets(raw, hh, dd) if kw == key]
            off = hits[int(rng.integers(len(hits)))]
            buf[off : off + 80] = _card(key, value)
            label = f"hdr-{key}"
        elif mode == 2:
            end = next(off for off, kw in cards if kw == "END")
            buf[end : end + 80] = b" " * 80 if rng.random() < 0.5 else _card("COMMENT", "'x'")
            label = "hdr-noEND"
        else:
            off, _ = cards[int(rng.integers(len(cards)))]
            buf[off : off + 80] = bytes(rng.integers(0, 256, 80, dtype=np.uint8))
            label = "hdr-garbage"
        add(label, bytes(buf))

    # the ASDF tree's YAML: a value replaced by one of another type, same length
    yaml_lines = []
    pos = asdf_start
    for line in raw[asdf_start : asdf_start + asdf_span].split(b"\n"):
        if b": " in line and not line.lstrip().startswith(b"%"):
            yaml_lines.append((pos + line.index(b": ") + 2, len(line) - line.index(b": ") - 2))
        pos += len(line) + 1
    for _ in range(N_YAML):
        buf = bytearray(raw)
        start, width = yaml_lines[int(rng.integers(len(yaml_lines)))]
        value = [b"null", b"[]", b"{}", b"'x'", b"1e999", b"-1", b"!!binary x", b"*a"][int(rng.integers(8))]
        value = value[:width].ljust(width)
        buf[start : start + width] = value
        add("yaml", bytes(buf))

    # not FITS at all
    add("text", b"this is not a FITS file\n" * 200)
    add("empty", b"")
    add("zeros", b"\0" * 5760)
    return files


@pytest.fixture(scope="module")
def corrupted(tmp_path_factory):
    from tweakflow.synthetic import SyntheticConfig, make_dataset

    base = tmp_path_factory.mktemp("fuzz")
    ds = make_dataset(str(base / "src"), SyntheticConfig(n_exposures=1, detectors=["nrca1"], shape=(64, 64), n_stars=3000, seed=1))
    outdir = base / "bad"
    outdir.mkdir()
    return _corrupt_files(ds["images"][0], str(outdir), np.random.default_rng(SEED))


@pytest.mark.slow
def test_corrupted_fits_give_only_clear_errors(corrupted):
    assert len(corrupted) >= 400
    problems, counts = [], {"ok": 0, "clear": 0}
    ctx = multiprocessing.get_context("spawn")
    # the reader's modes, drawn per file: the per-image jobs read pixels
    # without the WCS, the gather steps deserialize the WCS
    modes = np.random.default_rng(SEED + 1).integers(3, size=len(corrupted))
    pool = cf.ProcessPoolExecutor(max_workers=1, mp_context=ctx)
    try:
        for k, (_label, path) in enumerate(corrupted):
            with_data, with_wcs = [(True, False), (False, True), (True, True)][modes[k]]
            fut = pool.submit(read_one, path, with_data, with_wcs)
            try:
                kind, detail = fut.result(timeout=TIMEOUT)
            except cf.TimeoutError:
                kind, detail = "uncaught", f"no answer within {TIMEOUT} s (hang)"
                for proc in pool._processes.values():  # the worker we started
                    proc.kill()
                pool.shutdown(wait=False, cancel_futures=True)
                pool = cf.ProcessPoolExecutor(max_workers=1, mp_context=ctx)
            except cf.process.BrokenProcessPool:
                kind, detail = "uncaught", "the reader crashed the process"
                pool = cf.ProcessPoolExecutor(max_workers=1, mp_context=ctx)
            if kind == "uncaught":
                problems.append(f"{os.path.basename(path)} (with_data={with_data}, with_wcs={with_wcs}): {detail}")
            else:
                counts[kind] += 1
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    assert not problems, f"{len(problems)} of {len(corrupted)} files:\n" + "\n\n".join(problems[:20])
    # most corruptions must be detected (flipped pixel values may legitimately read fine)
    print(counts)
    assert counts["clear"] > len(corrupted) / 2, counts
