"""The quality verdict's measures and rules, the model cards' calibrated limits, and the scan/model-card checks, on
exact references.

The rules are also checked against the committed calibration table (``data/quality_calibration.csv``, made by
``Testing/calibrate_quality.py``): per shipped model, the results on cases it never trained on (unseen CHAOS
subjects) and on foreign scans. At most 1 in 10 unseen good results may be flagged; every foreign one must be flagged
by the verdict or warned about by the scan checks.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from RMAMambaSegmentationLib.errors import CheckpointError
from RMAMambaSegmentationLib.imaging.intensity import IntensityPreset
from RMAMambaSegmentationLib.inference.quality import (
    DEFAULT_THRESHOLDS,
    MODEL_MEASURES,
    RULES,
    QualityVerdict,
    assess,
    judge,
    judge_for_card,
    quality_measures,
    rules_for,
    thresholds_for,
)
from RMAMambaSegmentationLib.inference.scan_check import (
    ScanInfo,
    ScanMismatchError,
    check_scan,
    ct_air_share,
    option_style,
    scan_warnings,
    weighting,
)
from RMAMambaSegmentationLib.weights.location import bundled_weights_path
from RMAMambaSegmentationLib.weights.model_card import ModelCard, QualityThresholds, read_model_card

CALIBRATION = Path(__file__).resolve().parent / "data" / "quality_calibration.csv"
MEASURE_NAMES = ("liver_ml", "uncertain_share", "outside_share", "components", "extent_mm", "liver_slices")
GOOD = {"liver_ml": 1600.0, "uncertain_share": 0.1, "outside_share": 0.01, "components": 1.0,
        "liver_slices": 25.0, "extent_mm": 190.0}


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


def test_empty_result_is_checked_with_a_hint():
    probability = np.zeros((5, 8, 8), np.float32)
    measures = quality_measures(probability, probability.astype(np.uint8), threshold=0.5, slice_spacing_mm=5.0,
                                voxel_ml=0.01)
    verdict = judge(measures, trained="MR T2-SPIR")
    assert verdict.status == "check" and verdict.reasons == ["no liver found"]
    assert verdict.hint.startswith("the network found no liver") and "MR T2-SPIR" in verdict.hint


def test_each_rule_gives_its_reason_and_thin_volumes_skip_the_extent():
    assert judge(GOOD).ok and judge(GOOD).summary() == "ok" and judge(GOOD).hint == ""
    for rule in RULES:
        bad = dict(GOOD)
        bad[rule.measure] = (rule.high * 1.5) if rule.high is not None else rule.low / 2
        verdict = judge(bad)
        assert verdict.status == "check" and len(verdict.reasons) == 1, rule
        assert verdict.summary().startswith("check: ") and verdict.hint
    assert judge({**GOOD, "extent_mm": 30.0, "liver_slices": 3.0}).ok


def test_physiology_accepts_hepatomegaly_and_small_cirrhotic_livers():
    """Issue 29: good unseen livers of 3055 mL (default weights) and 3345 mL (U-Net) were flagged by 700-3000 mL."""
    for liver_ml in (350.0, 700.0, 3055.0, 3345.0, 3600.0, 4800.0):
        assert judge({**GOOD, "liver_ml": liver_ml}).ok, liver_ml
    for liver_ml in (42.0, 250.0, 5200.0):
        (reason,) = judge({**GOOD, "liver_ml": liver_ml}).reasons
        assert reason.startswith(f"liver volume {liver_ml:.0f} mL outside the adult range 300-5000 mL")
    assert judge({**GOOD, "extent_mm": 95.0}).ok and not judge({**GOOD, "extent_mm": 85.0}).ok


def test_default_limits_accept_the_unseen_subjects_of_issue_29():
    """6 % and 8 % of the thresholded voxels outside the largest component (good unseen results) passed 5 %."""
    for share in (0.06, 0.08):
        assert judge({**GOOD, "outside_share": share}).ok
    (reason,) = judge({**GOOD, "outside_share": 0.26}).reasons
    assert reason == "26 % of the thresholded voxels lie outside the largest component (at most 10 % for these weights)"


def test_the_cards_limits_decide_the_model_rules():
    strict = ModelCard(modality="MR", sequence="T2-SPIR", quality=QualityThresholds(0.2, 0.03))
    measures = {**GOOD, "uncertain_share": 0.22, "outside_share": 0.04}
    assert judge_for_card(measures, ModelCard()).ok  # no calibration: the documented defaults
    verdict = judge_for_card(measures, strict)
    assert verdict.reasons == [
        "22 % of the liver voxels are uncertain (0.1 < p < 0.9; at most 20 % for these weights)",
        "4 % of the thresholded voxels lie outside the largest component (at most 3 % for these weights)",
    ]
    assert "MR T2-SPIR" in verdict.hint and verdict.hint.startswith("the network is unsure of this scan")
    assert thresholds_for(None) is DEFAULT_THRESHOLDS and thresholds_for(strict) is strict.quality
    # ``assess`` (the inference's call) judges with the card it is given.
    probability = np.zeros((8, 20, 20), np.float32)
    probability[1:7, 4:16, 4:16] = 0.95
    probability[1:7, 4:16, 4:6] = 0.6  # 1/6 of the liver is uncertain
    raw = probability > 0.5
    uncertain = (probability > 0.1) & (probability < 0.9)
    mask = raw.astype(np.uint8)
    kwargs = {"slice_spacing_mm": 30.0, "voxel_ml": 2.0}
    assert assess(raw, uncertain, mask, **kwargs).ok
    assert not assess(raw, uncertain, mask, card=ModelCard(quality=QualityThresholds(0.15, 0.05)), **kwargs).ok


def test_quality_field_of_the_model_card(tmp_path):
    card = ModelCard(quality=QualityThresholds(0.3, 0.12, {"false_alarms": 0}))
    again = ModelCard.from_dict(card.to_dict())
    assert again.quality == card.quality and again.quality.calibration == {"false_alarms": 0}
    assert "quality" not in ModelCard().to_dict() and ModelCard.from_dict({}).quality is None
    for bad in ({"uncertain_share_max": 0.0, "outside_share_max": 0.1}, {"uncertain_share_max": 0.2},
                {"uncertain_share_max": "x", "outside_share_max": 0.1}, [0.2, 0.1]):
        with pytest.raises(ValueError):
            ModelCard.from_dict({"quality": bad})
    weights = tmp_path / "w.pt"
    (tmp_path / "w.json").write_text('{"quality": {"uncertain_share_max": 2, "outside_share_max": 0.1}}')
    with pytest.raises(CheckpointError, match=r"quality\.uncertain_share_max"):
        read_model_card(weights)


def test_verdict_round_trips_through_a_dict():
    verdict = judge({"liver_ml": 42.0, "uncertain_share": 0.4, "outside_share": 0.0, "components": 1.0,
                     "liver_slices": 5.0, "extent_mm": 40.0})
    again = QualityVerdict.from_dict(verdict.to_dict())
    assert again == verdict and len(again.reasons) == 3 and again.hint
    with pytest.raises(ValueError):
        QualityVerdict.from_dict({"status": "maybe"})


@pytest.mark.parametrize("model", ["T", "UNET"])
def test_calibration_table_holds_for_each_shipped_model(model):
    """The committed table against the rules in code: verdicts reproduced with the shipped card's limits, at most
    1 in 10 unseen good results flagged, every foreign result flagged or warned, the card's stated rates true."""
    card = read_model_card(bundled_weights_path(model))
    assert card.quality is not None, "the shipped card carries its calibrated limits"
    rows = [row for row in _calibration() if row["model"] == model]
    for row in rows:
        verdict = judge_for_card({key: float(row[key]) for key in MEASURE_NAMES}, card)
        assert verdict.summary() == row["verdict"], row["case"]
    good = [row for row in rows if row["group"] == "unseen" and float(row["dice"]) >= 0.8]
    flagged = [row["case"] for row in good if row["verdict"] != "ok"]
    assert len(good) >= 3 and len(flagged) * 10 <= len(good), flagged
    foreign = [row for row in rows if row["group"] == "foreign"]
    assert len(foreign) >= 5
    silent = [row["case"] for row in foreign if row["verdict"] == "ok" and row["warned"] != "1"]
    assert silent == []
    stated = card.quality.calibration
    assert (stated["unseen_good"], stated["false_alarms"]) == (len(good), len(flagged))
    detected = sum(row["verdict"] != "ok" or row["warned"] == "1" for row in foreign)
    assert (stated["foreign"], stated["detected"]) == (len(foreign), detected)
    assert set(MODEL_MEASURES) == {"uncertain_share", "outside_share"}


def test_rules_for_orders_volume_uncertainty_extent():
    assert [rule.measure for rule in rules_for(None)] == ["liver_ml", "uncertain_share", "outside_share", "extent_mm"]


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
    assert 'intensity="CT"' in no_card
    assert scan_warnings(_mr_like(), IntensityPreset.mri(), None) == []


def test_ct_warnings_name_the_remedy_as_the_caller_spells_it():
    """With MR weights and an MRI preset, the CT warnings name the CT preset: ``intensity="CT"`` in the Python
    API, ``--modality CT`` on the command line, with the Dice it gave the default weights."""
    for scan in (None, ScanInfo("CT", None)):
        (api,) = scan_warnings(_ct_like(), T2_CARD.intensity, T2_CARD, scan)
        assert 'CT intensity preset (intensity="CT")' in api and "--modality" not in api
        assert "Dice 0.86 with it against 0.65 without" in api
        with option_style("cli"):
            (cli,) = scan_warnings(_ct_like(), T2_CARD.intensity, T2_CARD, scan)
        assert "CT intensity preset (--modality CT)" in cli and 'intensity="' not in cli
    (hu, _) = scan_warnings(_ct_like(), IntensityPreset.ct(), T2_CARD)  # the CT preset already in use
    assert hu.endswith("the CT preset in use helps; weights trained on CT would do better")
    with pytest.raises(ValueError):
        option_style("gui").__enter__()


def test_a_3d_model_gets_the_modality_checks_without_the_preset_ones():
    srma_card = ModelCard(variant="SRMA", inference="window-3d", modality="MRI", sequence="T2")
    (hu,) = scan_warnings(_ct_like(), None, srma_card)
    assert hu.startswith("the intensities look like CT") and hu.endswith("use weights trained on CT")
    assert scan_warnings(_mr_like(), None, srma_card) == []
    assert "says T1" in scan_warnings(_mr_like(), None, srma_card, ScanInfo("MR", "T1 vibe"))[0]


def test_strict_turns_a_mismatch_into_an_error():
    with pytest.raises(ScanMismatchError, match="strict check"):
        check_scan(_ct_like(), T2_CARD.intensity, T2_CARD, strict=True)
    assert check_scan(_mr_like(), T2_CARD.intensity, T2_CARD, strict=True) == []


@pytest.mark.parametrize(("text", "expected"), [("T2-SPIR", "T2"), ("t1_vibe", "T1"), ("T1 in/out phase", "T1"),
                                                ("T2SPIR", "T2"), ("T1 and T2", None), ("DWI b800", None),
                                                ("MT12", None), ("", None)])
def test_weighting_is_read_from_descriptions(text, expected):
    assert weighting(text) == expected
