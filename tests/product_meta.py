"""How a product's metadata are compared with jwst's: what changed from its input.

Shared by benchmarks/record_jwst_meta.py, which records what jwst's
TweakRegStep changes (tests/data/jwst3_tweakreg_meta.json), and
tests/test_products_meta.py, which finds what tweakflow changes in the same
form. Only stdatamodels and astropy are needed (no jwst).
"""

import re

#: SIP coefficients of meta.wcsinfo and of the SCI header: one entry for all.
SIP_COEFF = re.compile(r"^meta\.wcsinfo\.(a|b|ap|bp)_\d+_\d+$")
SIP_CARD = re.compile(r"^(A|B|AP|BP)_\d+_\d+$")
#: The FITS WCS (SIP approximation) entries of meta.wcsinfo and keywords of the
#: SCI header: the corrected WCS itself, recorded by name (S_REGION by value).
FITS_WCS = re.compile(r"^(meta\.wcsinfo\.)?(wcsaxes|crpix\d|crval\d|ctype\d|cunit\d|cd\d_\d|[ab]p?_order|latpole|lonpole|mjdref|radesys|sipmxerr|sipiverr)$", re.I)
WCS_VALUE = "<FITS WCS>"


def plain(value):
    """A JSON value for a metadata value (numpy scalars, nodes, lists)."""
    if hasattr(value, "instance"):
        value = value.instance
    if hasattr(value, "item") and not isinstance(value, (list, dict)):
        value = value.item()
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, float) and value != value:
        return "nan"
    return value


def flat_meta(model):
    """``{flat key: value}`` of a model's ``meta`` without the GWCS's own entries."""
    out = {}
    for key, value in model.to_flat_dict().items():
        if not key.startswith("meta.") or key.startswith("meta.wcs."):
            continue
        out[key] = value
    return out


def meta_changes(before, after):
    """Entries of ``after`` absent from or different in ``before``, SIP coefficients named by pattern."""
    changed = {}
    for key in sorted(set(before) | set(after)):
        a, b = before.get(key), after.get(key)
        if key == "meta.wcs":
            if str(a) != str(b):
                changed[key] = "<GWCS>"
            continue
        if plain(a) == plain(b):
            continue
        if SIP_COEFF.match(key):
            changed["meta.wcsinfo.<sip coefficients>"] = WCS_VALUE
            continue
        changed[key] = WCS_VALUE if FITS_WCS.match(key) else plain(b) if key in after else "<removed>"
    return changed


def header_changes(before, after):
    """Changed keywords of a header (SIP coefficient cards by pattern only, commentary cards left out)."""
    out = {}
    for key in dict.fromkeys(list(before) + list(after)):
        if not key or key in ("COMMENT", "HISTORY"):
            continue
        a, b = before.get(key), after.get(key)
        if a == b:
            continue
        if SIP_CARD.match(key):
            out["<SIP coefficients>"] = WCS_VALUE
        else:
            out[key] = WCS_VALUE if FITS_WCS.match(key) else plain(b)
    return out
