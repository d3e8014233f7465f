"""A large synthetic mosaic as catalogs + image sidecars only (no pixels).

For scale benchmarks of the gather steps: ``n_images`` detector images of a
NIRCam-like mosaic (2 detectors per exposure, exposures on a grid with
overlaps), each with a catalog of the stars it sees (true positions plus
0.03 px noise, 200 brightest) and an image sidecar in the format the
``detect_sources`` rule writes.
"""

from __future__ import annotations

import io
import os

import numpy as np


def make_catalog_mosaic(workdir, n_images, seed=1, step_arcsec=55.0, refcat=None):
    """Write the catalogs and image sidecars; returns their paths (two lists).

    With ``refcat`` (a path), also an ECSV reference catalog of the field:
    the brightest fifth of the stars, RA/DEC with 5 mas of noise.
    """
    import asdf
    from astropy.table import Table

    from tweakflow import synthetic as syn
    from tweakflow.catalogs import write_catalog
    from tweakflow.io import ImageData, write_image_sidecar

    os.makedirs(workdir, exist_ok=True)
    rng = np.random.default_rng(seed)
    dets = ["nrca1", "nrca3"]
    n_exp = int(np.ceil(n_images / len(dets)))
    side = int(np.ceil(np.sqrt(n_exp)))
    shape = (2048, 2048)
    half = 0.5 * side * step_arcsec + 120.0
    ra0, dec0 = 150.0, 2.0
    ra_s, dec_s, mag = syn._star_field(rng, ra0, dec0, half, 400.0)
    v2c, v3c = syn.MODULE_V2V3
    base = syn._v23tosky(v2c, v3c, 0.0, ra0, dec0)
    coeffs = {d: syn._distortion_coeffs(np.random.default_rng([seed, i])) for i, d in enumerate(dets)}
    cats, sides = [], []
    k = 0
    for e in range(n_exp):
        gx, gy = e % side, e // side
        ra_c, dec_c = base(v2c + (gx - side / 2) * step_arcsec, v3c + (gy - side / 2) * step_arcsec)
        err = rng.normal(0, 0.3, 2)
        ra_e, dec_e = syn._v23tosky(v2c, v3c, 0.0, ra_c, dec_c)(v2c + err[0], v3c + err[1])
        att = syn._v23tosky(v2c, v3c, 0.0, ra_e, dec_e)
        true_att = syn._v23tosky(v2c, v3c, 0.0, ra_c, dec_c)
        for det in dets:
            if k >= n_images:
                break
            dv2, dv3, yang = syn.DETECTOR_LAYOUT[det]
            info = {"v2_ref": v2c + dv2, "v3_ref": v3c + dv3, "v3yangle": yang, "vparity": -1}
            r, d, roll = syn._attitude_refs(true_att, info["v2_ref"], info["v3_ref"])
            tw = syn.make_jwst_gwcs(shape, coeffs[det], dict(info, ra_ref=r, dec_ref=d, roll_ref=roll))
            r, d, roll = syn._attitude_refs(att, info["v2_ref"], info["v3_ref"])
            finfo = dict(info, ra_ref=r, dec_ref=d, roll_ref=roll)
            fw = syn.make_jwst_gwcs(shape, coeffs[det], finfo)
            cra, cdec = tw(1024, 1024)
            near = np.hypot((ra_s - cra) * np.cos(np.deg2rad(cdec)), dec_s - cdec) * 3600 < 50
            x, y = tw.invert(ra_s[near], dec_s[near], with_bounding_box=False)
            ok = (x > 0) & (x < 2047) & (y > 0) & (y < 2047)
            order = np.argsort(mag[near][ok])[:200]
            cat = Table({"id": np.arange(1, len(order) + 1), "x": x[ok][order] + rng.normal(0, 0.03, len(order)),
                         "y": y[ok][order] + rng.normal(0, 0.03, len(order)), "flux": 10 ** (-0.4 * mag[near][ok][order])})
            name = f"mos_{e:05d}_{det}_cal.fits"
            obs = {"program_number": "09999", "observation_number": "001", "visit_number": "001", "visit_group": "01",
                   "sequence_id": "1", "activity_id": "01", "exposure_number": f"{e + 1:05d}", "date": "2026-01-01", "time": "00:00:00"}
            buf = io.BytesIO()
            asdf.AsdfFile({"meta": {"wcs": fw, "wcsinfo": finfo, "observation": obs, "filename": name}}).write_to(buf)
            im = ImageData(path=os.path.join(workdir, name), kind="jwst", data=None, dq=None, wcs=None,
                           wcsinfo=finfo, meta={"filename": name, "observation": obs, "date": "2026-01-01T00:00:00"},
                           shape=shape, wcs_blob=buf.getvalue())
            cpath = os.path.join(workdir, f"{name[:-9]}_cat.ecsv")
            spath = os.path.join(workdir, f"{name[:-9]}_meta.json")
            write_catalog(cat, cpath)
            write_image_sidecar(spath, im)
            cats.append(cpath)
            sides.append(spath)
            k += 1
    if refcat:
        bright = mag <= np.quantile(mag, 0.2)
        noise = rng.normal(0, 0.005 / 3600, (2, int(bright.sum())))
        write_catalog(Table({"RA": ra_s[bright] + noise[0] / np.cos(np.deg2rad(dec_s[bright])), "DEC": dec_s[bright] + noise[1]}), refcat)
    return cats, sides
