"""Resolving the workflow's ``inputs`` into a list of images.

``inputs`` is ``demo`` (the built-in synthetic dataset), the path of a
level-3 association JSON, or a list of files, folders and glob patterns (a
folder stands for its ``*_cal.fits`` files, or its ``*.fits`` files). Each image
gets a *stem* (its base name without ``_cal.fits``) that names its products.
"""

from __future__ import annotations

import glob
import json
import os

from .errors import ConfigError, InputError
from .io import model_filename, output_stem
from .synthetic import SyntheticConfig, exposure_filenames

__all__ = ["resolve_inputs", "read_association", "member_association", "directory_images"]


def directory_images(folder):
    """The images of a folder given as an input: its ``*_cal.fits`` files or,
    if it has none, its ``*.fits`` files, sorted by name.

    ``*_cal.fits`` first: a folder of a JWST program holds the calibrated
    images next to other products (``_i2d``, ``_crf``...) that must not be
    aligned with them. tweakflow's own products (``*_tweakreg.fits``, when
    ``output_dir`` is that folder) are never taken. Sorted, so that the
    order (which ``enforce_user_order`` uses) is the same on every file
    system. Not recursive.

    Raises
    ------
    InputError
        ``<folder>: a directory with no *_cal.fits or *.fits files``.
    """
    folder = os.fspath(folder)
    for pattern in ("*_cal.fits", "*.fits"):
        hits = glob.glob(os.path.join(glob.escape(folder), pattern))
        hits = sorted(p for p in hits if os.path.isfile(p) and not p.endswith("_tweakreg.fits"))
        if hits:
            return hits
    raise InputError(f"{folder}: a directory with no *_cal.fits or *.fits files")


def read_association(path, allow_outside=False):
    """Science members of a level-3 association.

    Parameters
    ----------
    path : str
        Association JSON file.
    allow_outside : bool
        Accept member paths outside the association's folder.

    Returns
    -------
    list of dict
        ``path`` (absolute), ``group_id`` (or None), ``tweakreg_catalog``
        (absolute path, ``""`` meaning "detect", or None when not given),
        and ``association``: what the JWST step records of the association
        in the member's product (`member_association`).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputError(f"{path}: association file does not exist")
    try:
        with open(path, encoding="utf-8") as f:
            asn = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: association is not valid JSON ({exc})") from None
    if not isinstance(asn, dict) or not isinstance(asn.get("products"), list) or not asn["products"]:
        raise InputError(f"{path}: association has no 'products'")
    folder = os.path.dirname(os.path.abspath(path))
    members = []
    for ip, prod in enumerate(asn["products"]):
        mem = prod.get("members") if isinstance(prod, dict) else None
        if not isinstance(mem, list):
            raise InputError(f"{path}: products[{ip}] has no 'members' list")
        for im, m in enumerate(mem):
            if not isinstance(m, dict) or "expname" not in m:
                raise InputError(f"{path}: products[{ip}].members[{im}] has no 'expname'")
            if str(m.get("exptype", "science")).lower() != "science":
                continue
            full = os.path.normpath(os.path.join(folder, m["expname"]))
            if not allow_outside and os.path.commonpath([folder, full]) != folder:
                raise InputError(
                    f"{path}: member '{m['expname']}' is outside the association's folder "
                    "(set allow_outside_asn: true to accept it)"
                )
            if not os.path.isfile(full):
                raise InputError(f"{path}: member '{m['expname']}' does not exist ({full})")
            cat = m.get("tweakreg_catalog")
            if cat:
                cat = os.path.normpath(os.path.join(folder, cat))
            members.append({"path": full, "group_id": m.get("group_id"), "tweakreg_catalog": cat, "association": member_association(path, asn, m)})
    if not members:
        raise InputError(f"{path}: association has no science members")
    return members


def member_association(path, asn, member):
    """What a product records of the association its image came from.

    ``table_name`` (the association's file name), ``pool_name`` (its
    ``asn_pool``, when it has one), ``exptype`` (the member's, ``science``
    when not given) and, when the member names one, its
    ``tweakreg_catalog`` as written there: the ``meta.asn`` and
    ``meta.tweakreg_catalog`` the JWST step writes
    (`tweakflow.wcs_update.set_step_meta`).
    """
    out = {"table_name": os.path.basename(path), "exptype": str(member.get("exptype", "science"))}
    if asn.get("asn_pool") is not None:
        out["pool_name"] = str(asn["asn_pool"])
    if member.get("tweakreg_catalog") is not None:
        out["tweakreg_catalog"] = str(member["tweakreg_catalog"])
    return out


def resolve_inputs(inputs, output_dir="results", demo=None, allow_outside_asn=False, output_use_model=False):
    """Ordered list of images to align.

    Parameters
    ----------
    inputs : str or list of str
        ``"demo"``, an association JSON, or files, folders (their images:
        `directory_images`) and globs.
    output_dir : str
        Where the demo dataset is generated (``{output_dir}/demo``).
    demo : dict or None
        Synthetic dataset parameters for ``"demo"``.
    output_use_model : bool
        Name each image's products after its ``meta.filename`` (the primary
        header's ``FILENAME``, read here; the file's name when absent), as
        the step's ``output_use_model`` does, instead of the file's name.

    Returns
    -------
    list of dict
        ``stem``, ``path``, ``group_id``, ``tweakreg_catalog``,
        ``filename`` (``meta.filename``, which names published catalogs)
        and ``association`` (`member_association`, None for an image not
        given by an association) per image.
    """
    if inputs == "demo":
        names = exposure_filenames(SyntheticConfig.from_dict(demo or {}))
        folder = os.path.join(output_dir, "demo")
        items = [{"path": os.path.join(folder, n), "group_id": None, "tweakreg_catalog": None} for n in names]
    elif isinstance(inputs, str) and inputs.lower().endswith(".json"):
        items = read_association(inputs, allow_outside=allow_outside_asn)
    else:
        patterns = [inputs] if isinstance(inputs, str) else list(inputs or [])
        items = []
        for pat in patterns:
            hits = sorted(glob.glob(pat)) if glob.has_magic(pat) else [pat]
            if not hits:
                raise ConfigError(f"inputs: pattern '{pat}' matches no file")
            for h in hits:
                for path in directory_images(h) if os.path.isdir(h) else [h]:
                    if not os.path.isfile(path):
                        raise InputError(f"{path}: input image does not exist")
                    items.append({"path": path, "group_id": None, "tweakreg_catalog": None})
    if not items:
        raise ConfigError("inputs: no images to align")
    seen = {}
    for it in items:
        it.setdefault("association", None)
        it["filename"] = model_filename(it["path"])
        it["stem"] = output_stem(it["filename"] if output_use_model else it["path"])
        if it["stem"] in seen:
            raise ConfigError(
                f"inputs: '{seen[it['stem']]}' and '{it['path']}' would both be written as "
                f"'{it['stem']}_tweakreg.fits'"
            )
        seen[it["stem"]] = it["path"]
    return items
