"""Benchmark: writing the corrected JWST products, patched (today) vs re-serialized (before).

On the demo's 8 NIRCam-like images of 2048x2048 (`tweakflow.synthetic`,
80 MB each; generated in ``--workdir`` unless there already), each given a
``COMPLETE`` WCS sidecar holding its GWCS corrected by a small shift and
rotation (`prepare`), this times
`tweakflow.wcs_update.write_jwst_output` per image (default SIP
parameters) with

* ``patched``: the writer as it is: the input opened with its arrays
  memory-mapped, the output's headers and ``ASDF`` extension as stdatamodels
  builds them, the arrays' data blocks copied byte for byte
  (`tweakflow.wcs_update.save_product`, `tweakflow.fitspatch`);
* ``full``: the writer before: ``ImageModel(path)`` (arrays read) and
  ``model.save`` (every array re-encoded),

in alternating rounds (full, patched, patched, full, ...), each into an
empty folder, with the page cache's dirty pages flushed (``os.sync``,
untimed) before each round, all in one process (warm: one untimed round of
each first); wall and CPU time (``time.process_time``: this process's
user and system time, the kernel's copy included) are both reported, the
latter less sensitive to other work on the machine. It checks that both give the same file byte for byte (with
``meta.date`` and the log's timestamps fixed), and with ``--memory``
measures the peak memory of one write of each in a process of its own::

    python benchmarks/output_write.py [--workdir DIR] [--rounds 4] [--memory]
"""

from __future__ import annotations

import argparse
import contextlib
import filecmp
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from unittest import mock

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", default=os.path.join(HERE, ".work", "output_write"), help="data and outputs (default: benchmarks/.work/output_write)")
    ap.add_argument("--rounds", type=int, default=4, help="timed rounds of each writer (8 images each)")
    ap.add_argument("--memory", action="store_true", help="also the peak memory of one write of each, in a process of its own")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    return ap.parse_args(argv)


def prepare(workdir):
    """The demo images and a COMPLETE sidecar for each: [(image, sidecar)].

    Each sidecar's GWCS is the image's corrected as the relative alignment
    corrects it (tweakwcs' ``v2v3corr`` frame): a shift of (0.1, -0.2)
    arcsec and a rotation of 0.01 deg.
    """
    import numpy as np

    from tweakflow import synthetic
    from tweakflow.fitting import make_corrector
    from tweakflow.io import read_jwst_meta, write_sidecar

    data = os.path.join(workdir, "data")
    if not os.path.exists(os.path.join(data, "truth.asdf")):
        synthetic.make_dataset(data, synthetic.SyntheticConfig())  # 4 exposures x 2 detectors, 2048^2
    names = sorted(n for n in os.listdir(data) if n.endswith("_cal.fits"))
    a = np.deg2rad(0.01)
    rotation = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    pairs = []
    for name in names:
        image = os.path.join(data, name)
        side = os.path.join(workdir, "sidecars", name.replace("_cal.fits", "_wcs.asdf"))
        if not os.path.exists(side):
            wcs, wcsinfo, _ = read_jwst_meta(image)
            corrector = make_corrector(wcs, wcsinfo, None, name, "g1")
            corrector.set_correction(matrix=rotation, shift=(0.1, -0.2))
            write_sidecar(
                side, wcs=corrector.wcs, wcsinfo=wcsinfo, group_id="g1", filename=name, shape=(2048, 2048),
                extra={"status": "COMPLETE", "reason": "", "stage": "relative"},
            )
        pairs.append((image, side))
    return pairs


@contextlib.contextmanager
def _read_in_full(image):
    """The input opened as the writer did before: ``ImageModel(path)``, arrays read."""
    from stdatamodels.jwst.datamodels import ImageModel

    with ImageModel(image) as model:
        yield model


@contextlib.contextmanager
def writer(kind):
    """``write_jwst_output`` as it is (``patched``) or as it was (``full``)."""
    from tweakflow import wcs_update

    if kind == "patched":
        yield
        return
    with (
        mock.patch.object(wcs_update, "_open_image_model", _read_in_full),
        mock.patch.object(wcs_update, "save_product", lambda model, image, path: model.save(path)),
    ):
        yield


def one_round(kind, pairs, out):
    """(wall, CPU) seconds per image of one writer on all images, into an empty ``out``."""
    from tweakflow.io import read_sidecar
    from tweakflow.params import SIP_PARS
    from tweakflow.wcs_update import write_jwst_output

    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    sidecars = [read_sidecar(s) for _, s in pairs]
    os.sync()
    times = []
    with writer(kind):
        for (image, _), sc in zip(pairs, sidecars):
            t, c = time.perf_counter(), time.process_time()
            write_jwst_output(image, os.path.join(out, os.path.basename(image).replace("_cal", "_tweakreg")), sc, dict(SIP_PARS))
            times.append((time.perf_counter() - t, time.process_time() - c))
    return times


def same_files(pairs, workdir):
    """Both writers' outputs, with the times fixed: byte for byte the same?"""
    from astropy.time import Time

    from tweakflow import callogs

    fixed = Time("2026-01-01T00:00:00")
    dirs = {k: os.path.join(workdir, f"same_{k}") for k in ("full", "patched")}
    with mock.patch.object(Time, "now", return_value=fixed), mock.patch.object(callogs, "cal_log_line", lambda record: record.getMessage()):
        for kind, out in dirs.items():
            one_round(kind, pairs, out)
    names = sorted(os.listdir(dirs["full"]))
    return all(filecmp.cmp(os.path.join(dirs["full"], n), os.path.join(dirs["patched"], n), shallow=False) for n in names)


def copy_primitives(image, workdir, repeat=5):
    """Median seconds to copy an image's array data blocks: in the kernel vs through a memory map.

    ``copy_file_range`` is what `tweakflow.fitspatch.write` does; a memory
    map written with ``ndarray.tofile`` is what astropy does for an HDU whose
    data were not loaded (the other way to write the output without
    re-encoding: the input's HDUs opened raw and memory-mapped).
    """
    import numpy as np
    from astropy.io import fits

    with fits.open(image, do_not_scale_image_data=True) as hdul:
        spans = [(hdul.fileinfo(i)["datLoc"], hdul.fileinfo(i)["datSpan"]) for i, h in enumerate(hdul) if h.name != "ASDF" and h.data is not None]
    dest = os.path.join(workdir, "copy_test.bin")

    def kernel():
        with open(image, "rb") as src, open(dest, "wb", buffering=0) as dst:
            for offset, size in spans:
                done = 0
                while done < size:
                    done += os.copy_file_range(src.fileno(), dst.fileno(), size - done, offset + done)

    def memmap():
        raw = np.memmap(image, dtype=np.uint8, mode="r")
        with open(dest, "wb") as dst:
            for offset, size in spans:
                raw[offset : offset + size].tofile(dst)

    out = {}
    for name, func in (("copy_file_range", kernel), ("memmap + tofile", memmap)):
        times = []
        for _ in range(repeat + 1):
            with contextlib.suppress(FileNotFoundError):
                os.remove(dest)
            os.sync()
            t = time.perf_counter()
            func()
            times.append(time.perf_counter() - t)
        out[name] = statistics.median(times[1:])
    os.remove(dest)
    return out


def vm_hwm_mb():
    """This process's peak resident memory (MB; ``VmHWM``: unlike ``ru_maxrss``, not inherited from the parent)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM:"))


def peak_memory(kind, pair, workdir):
    """Peak RSS (MB) of a process that imports the writer and writes one product."""
    code = (
        "import sys\n"
        f"sys.path.insert(0, {HERE!r})\n"
        "import output_write as b\n"
        "from tweakflow.io import read_sidecar\n"
        "from tweakflow.params import SIP_PARS\n"
        "from tweakflow.wcs_update import write_jwst_output\n"
        "from stdatamodels.jwst.datamodels import ImageModel\n"
        f"sc = read_sidecar({pair[1]!r})\n"
        "before = b.vm_hwm_mb()\n"
        f"with b.writer({kind!r}):\n"
        f"    write_jwst_output({pair[0]!r}, {os.path.join(workdir, 'mem_' + kind, 'x_tweakreg.fits')!r}, sc, dict(SIP_PARS))\n"
        "print(before, b.vm_hwm_mb())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split()
    return float(out[-2]), float(out[-1])


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.workdir, exist_ok=True)
    pairs = prepare(args.workdir)
    identical = same_files(pairs, args.workdir)
    for kind in ("full", "patched"):  # warm-up
        one_round(kind, pairs, os.path.join(args.workdir, f"out_{kind}"))
    times = {"full": [], "patched": []}
    order = ["full", "patched", "patched", "full"]
    for r in range(args.rounds):
        for kind in order[r % 2 * 2 : r % 2 * 2 + 2]:
            times[kind] += one_round(kind, pairs, os.path.join(args.workdir, f"out_{kind}"))
    result = {"images": len(pairs), "rounds": args.rounds, "identical_outputs": identical}
    print(f"{len(pairs)} images of 2048x2048 (80 MB), {args.rounds} alternating rounds of each writer, seconds per image:")
    for k in ("full", "patched"):
        for i, what in enumerate(("wall", "cpu")):
            v = sorted(t[i] for t in times[k])
            result[f"{k}_{what}_median_s"] = statistics.median(v)
            print(f"  {k:8s} {what:4s} median {statistics.median(v):.3f}  mean {statistics.mean(v):.3f}  min {v[0]:.3f}  max {v[-1]:.3f}")
    for what in ("wall", "cpu"):
        print(f"  patched / full ({what}, medians): {result[f'patched_{what}_median_s'] / result[f'full_{what}_median_s']:.2f}x")
    print(f"  outputs byte for byte the same (times fixed): {identical}")
    for name, t in copy_primitives(pairs[0][0], args.workdir).items():
        result[f"copy_{name}"] = t
        print(f"  copying one image's array data blocks (80 MB), {name}: {t * 1000:.0f} ms")
    if args.memory:
        for kind in ("full", "patched"):
            before, peak = peak_memory(kind, pairs[0], args.workdir)
            result[f"{kind}_peak_rss_mb"] = peak
            print(f"  peak RSS, one write in a process of its own, {kind}: {peak:.0f} MB (after the imports: {before:.0f} MB)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
