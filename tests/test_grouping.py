from tweakflow.grouping import exposure_group_id, resolve_group_id

OBS = {"program_number": "01234", "observation_number": "001", "visit_number": "002", "visit_group": "03",
       "sequence_id": "1", "activity_id": "04", "exposure_number": "00005"}


def test_exposure_group_id():
    assert exposure_group_id(OBS) == "jw01234001002_03104_00005"
    assert exposure_group_id({**OBS, "exposure_number": None}) is None


def test_precedence():
    assert resolve_group_id(OBS) == "jw01234001002_03104_00005"
    assert resolve_group_id(OBS, model_group_id="m") == "m"
    assert resolve_group_id(OBS, model_group_id="m", asn_group_id="a") == "a"
    assert resolve_group_id({}, fallback="file.fits") == "file.fits"
