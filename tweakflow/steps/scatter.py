"""Scatter step: one corrected output per input image."""

from __future__ import annotations

import logging

from ..errors import InputError
from ..io import read_sidecar
from ..wcs_update import write_fits_output, write_jwst_output

__all__ = ["apply_step"]

log = logging.getLogger("tweakflow")


def apply_step(image, wcs_sidecar, output, *, sip=None, association=None):
    """Write ``output``: the input image with its corrected WCS.

    ``COMPLETE`` when the alignment succeeded, ``SKIPPED`` otherwise, in
    which case the WCS is left unchanged. JWST ``ImageModel`` inputs get
    the corrected GWCS, ``S_REGION``, the FITS SIP approximation and the
    JWST step's metadata with the image's fit results
    (`tweakflow.wcs_update.write_jwst_output`); plain FITS images a copy
    with corrected WCS keywords, ``WCSNAME`` and the original WCS kept as
    alternate ``O`` (`~tweakflow.wcs_update.write_fits_output`).

    Parameters
    ----------
    image : str
        Input image.
    wcs_sidecar : str
        The image's WCS sidecar from the last alignment stage.
    output : str
        Output image.
    sip : dict or None
        SIP-approximation parameters (`tweakflow.wcs_update.SIP_PARS`).
    association : dict or None
        What the input association says of the image (the ``association``
        of `tweakflow.inputs.resolve_inputs`); None for an image given in
        a list of files.
    """
    sc = read_sidecar(wcs_sidecar)
    if sc["kind"] == "unreadable":
        # on_bad_input: skip: the image was left out; there is nothing to write
        raise InputError(f"{image}: no output written: {sc['extra']['reason']}")
    if sc["kind"] == "fits":
        status = write_fits_output(image, output, sc)
    else:
        status = write_jwst_output(image, output, sc, sip, association=association)
    reason = sc["extra"].get("reason")
    log.info("%s -> %s (%s%s)", image, output, status, f": {reason}" if reason and status != "COMPLETE" else "")
