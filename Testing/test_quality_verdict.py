"""The quality verdict's measures and rules, and the scan/model-card checks, on exact references.

The rules are also checked against the calibration table (``data/quality_calibration.csv``: the measures of the
default weights on the 16 CHAOS T2-SPIR subjects and on foreign scans, made once by the command in README).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from RMAMambaSegmentationLib.imaging.intensity import IntensityPreset
from RMAMambaSegmentationLib.inference.quality import RULES, QualityVerdict, judge, quality_measures
from RMAMambaSegmentationLib.inference.scan_check import (
    ScanInfo,
    ScanMismatchError,
    check_scan,
    ct_air_share,
    scan_warnings,
    weighting,
)
from RMAMambaSegmentationLib.weights.model_card import ModelCard

CALIBRATION = Path(__file__).resolve().parent / "data" / "quality_calibration.csv"


def _calibration() -> list[dict[str, str]]:
    with CALIBRATION.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_measures_of_a_known_stack():
    """A 10x10x10 cube (p = 0.95, its outer shell 0.6) plus a 2x2x2 stray blob, 2 mm slices, 8 uL voxels."""
    probability = np.zeros((20, 30, 30), np.float32)
    probability[2:12, 5:15, 5:15] = 0.6
    probability[3:11, 6:14, 6:14] = 0.95
    probability[15:17, 20:22, 20:22] = 0.7
    mask = (probability > 0.5).astype(np.uint8)
    mask[15:17] = 0  # post-processing kept the cube only
    measures = quality_measures(probability, mask, threshold=0.5, slice_spacing_mm=2.0, voxel_ml=0.008)
    assert measures["liver_ml"] == pytest.approx(1000 * 0.008)
    assert measures["uncertain_share"] == pytest.approx((1000 - 512) / 1000)
    assert measures["outside_share"] == pytest.approx(8 / 1008)
    assert measures["components"] == 1  # the 8-voxel blob is 0.064 mL, under 1 mL
    assert measures["liver_slices"] == 10 and measures["extent_mm"] == pytest.approx(20.0)


def test_empty_result_is_checked():
    probability = np.zeros((5, 8, 8), np.float32)
    verdict = judge(quality_measures(probability, probability.astype(np.uint8), threshold=0.5,
                                     slice_spacing_mm=5.0, voxel_ml=0.01))
    assert verdict.status == "check" and verdict.reasons == ["no liver found"]


def test_each_rule_gives_its_reason_and_thin_volumes_skip_the_extent():
    good = {"liver_ml": 1600.0, "uncertain_share": 0.1, "outside_share": 0.01, "components": 1.0,
            "liver_slices": 25.0, "extent_mm": 190.0}
    assert judge(good).ok and judge(good).summary() == "ok"
    for rule in RULES:
        bad = dict(good)
        bad[rule.measure] = (rule.high * 1.5) if rule.high is not None else rule.low / 2
        verdict = judge(bad)
        assert verdict.status == "check" and len(verdict.reasons) == 1, rule
        assert verdict.summary().startswith("check: ")
    assert judge({**good, "extent_mm": 30.0, "liver_slices": 3.0}).ok


def test_verdict_round_trips_through_a_dict():
    verdict = judge({"liver_ml": 42.0, "uncertain_share": 0.4, "outside_share": 0.0, "components": 1.0,
                     "liver_slices": 5.0, "extent_mm": 40.0})
    again = QualityVerdict.from_dict(verdict.to_dict())
    assert again == verdict and len(again.reasons) == 3
    with pytest.raises(ValueError):
        QualityVerdict.from_dict({"status": "maybe"})


#: Calibration cases the rules do not pass: every foreign scan run with the default preset, and subject 15, where
#: the default weights find no liver at all (max p 0.39). The CT run with ``--modality CT`` looks like an MR subject
#: (1391 mL against the expert's 1418): the scan warnings flag that one, not the verdict.
EXPECTED_CHECK = {"chaos_mr_t2spir_15", "ct_dicom_nomod", "totalseg_ct_nomod", "totalseg_mr"}


def test_calibration_table_chaos_subjects_pass_and_foreign_scans_are_flagged():
    rows = _calibration()
    assert len([r for r in rows if r["case"].startswith("chaos_mr_t2spir_")]) == 16 and len(rows) == 20
    measures = {rule.measure for rule in RULES} | {"liver_slices"}
    for row in rows:
        verdict = judge({key: float(value) for key, value in row.items() if key in measures})
        assert verdict.ok == (row["case"] not in EXPECTED_CHECK), (row["case"], verdict.reasons)
        assert verdict.summary() == row["verdict"]


T2_CARD = ModelCard(intensity=IntensityPreset.mri_tissue(), modality="MR", sequence="T2-SPIR")


def _mr_like() -> np.ndarray:
    return np.linspace(0, 900, 4 * 32 * 32).reshape(4, 32, 32)


def _ct_like() -> np.ndarray:
    values = np.full((4, 32, 32), 40.0)
    values[:, :, :6] = -1000.0  # air beside the body
    return values


def test_scan_warnings():
    assert scan_warnings(_mr_like(), T2_CARD.intensity, T2_CARD) == []
    assert ct_air_share(_ct_like()) == pytest.approx(6 / 32) and ct_air_share(_mr_like()) == 0.0
    (ct_tag,) = scan_warnings(_mr_like(), T2_CARD.intensity, T2_CARD, ScanInfo("CT", None))
    assert ct_tag.startswith("the scan is CT (DICOM Modality tag) but the weights were trained on MR T2-SPIR")
    (hu,) = scan_warnings(_ct_like(), T2_CARD.intensity, T2_CARD)
    assert hu.startswith("the intensities look like CT Hounsfield units")
    preset, window = scan_warnings(_mr_like(), IntensityPreset.ct(), T2_CARD)
    assert preset.startswith("CT intensity preset with weights trained with MRI-tissue")
    assert window.startswith("CT window preset but the intensities do not look like Hounsfield units")
    (t1,) = scan_warnings(_mr_like(), T2_CARD.intensity, T2_CARD, ScanInfo("MR", "t1_vibe_dixon_tra"))
    assert "says T1" in t1
    assert scan_warnings(_mr_like(), T2_CARD.intensity, T2_CARD, ScanInfo("MR", "T2 SPIR tra")) == []
    (no_card,) = scan_warnings(_ct_like(), IntensityPreset.mri(), None)
    assert "--modality CT" in no_card
    assert scan_warnings(_mr_like(), IntensityPreset.mri(), None) == []


def test_strict_turns_a_mismatch_into_an_error():
    with pytest.raises(ScanMismatchError, match="--strict"):
        check_scan(_ct_like(), T2_CARD.intensity, T2_CARD, strict=True)
    assert check_scan(_mr_like(), T2_CARD.intensity, T2_CARD, strict=True) == []


@pytest.mark.parametrize(("text", "expected"), [("T2-SPIR", "T2"), ("t1_vibe", "T1"), ("T1 in/out phase", "T1"),
                                                ("T2SPIR", "T2"), ("T1 and T2", None), ("DWI b800", None),
                                                ("MT12", None), ("", None)])
def test_weighting_is_read_from_descriptions(text, expected):
    assert weighting(text) == expected
