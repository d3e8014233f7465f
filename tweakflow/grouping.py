"""Exposure groups: images taken at the same time share one correction.

JWST identifies the detectors of one exposure by its observation metadata;
a group id set explicitly (an association member's ``group_id`` or a model's
``meta.group_id``) overrides the automatic one.
"""

from __future__ import annotations

__all__ = ["exposure_group_id", "resolve_group_id"]

_GROUP_KEYS = (
    "program_number",
    "observation_number",
    "visit_number",
    "visit_group",
    "sequence_id",
    "activity_id",
    "exposure_number",
)


def exposure_group_id(observation):
    """Group id of an exposure from its ``meta.observation`` attributes.

    The id has the form ``jw{program}{observation}{visit}_{visit_group}
    {sequence_id}{activity_id}_{exposure_number}``, which is what the JWST
    pipeline derives, so the detectors of one exposure share it.

    Parameters
    ----------
    observation : dict
        ``meta.observation`` of the image.

    Returns
    -------
    str or None
        None when any of the attributes is missing.
    """
    vals = [observation.get(k) for k in _GROUP_KEYS]
    if any(v is None or str(v).strip() == "" for v in vals):
        return None
    p, o, v, vg, s, a, e = (str(x).strip() for x in vals)
    return f"jw{p}{o}{v}_{vg}{s}{a}_{e}"


def resolve_group_id(observation, model_group_id=None, asn_group_id=None, fallback=None):
    """The group id to use, by precedence.

    An association member's ``group_id`` wins over the model's
    ``meta.group_id``, which wins over the id derived from the exposure
    metadata; when none is available ``fallback`` (e.g. the file name, which
    makes the image its own group) is used.
    """
    for gid in (asn_group_id, model_group_id):
        if gid is not None and str(gid).strip() != "":
            return str(gid).strip()
    gid = exposure_group_id(observation or {})
    return gid if gid is not None else str(fallback)
