"""Where the quality verdict and the scan checks reach the user: ``rmamamba segment --fail-on-check`` (exit 3, every
output still written), summary.csv's measure columns, crossval.csv's measure columns, the overlay's banner (outside
the image), the hint of a foreign MR scan, the caller's spelling of the CT remedy, and the scan checks of a 3D model
(SRMA-Mamba) -- on real volumes with the shipped weights where a network runs.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from srma_seeded import srma_seeded_state_dict

from conftest import DATA, TOTALSEG
from RMAMambaSegmentationLib.batch.segment_files import QUALITY_COLUMNS
from RMAMambaSegmentationLib.cli import segment_command
from RMAMambaSegmentationLib.cli.crossval import CROSSVAL_COLUMNS, crossval_table, write_crossval_csv
from RMAMambaSegmentationLib.files.overlay import CHECK_RGB, FRAME, check_band_height, mark_for_check, overlay_rgb
from RMAMambaSegmentationLib.files.seg_nrrd import write_liver_seg_nrrd
from RMAMambaSegmentationLib.inference.pipeline import segment_image
from RMAMambaSegmentationLib.inference.scan_check import ScanMismatchError
from RMAMambaSegmentationLib.weights.checkpoints import save_checkpoint
from RMAMambaSegmentationLib.weights.model_card import ModelCard, write_model_card

pytestmark = pytest.mark.usefixtures("one_torch_thread")
GOOD_CASE = DATA / "chaos_mr_t2spir" / "images" / "chaos_mr_t2spir_20_image.nii.gz"
FOREIGN_MR = TOTALSEG / "example_mr_sm.nii.gz"
FOREIGN_CT = TOTALSEG / "example_ct_sm.nii.gz"
CALIBRATION = Path(__file__).resolve().parent / "data" / "quality_calibration.csv"


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="rmamamba")
    segment_command.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["segment", *argv])
    return args.run(args)


def _summary(folder: Path) -> dict[str, dict[str, str]]:
    with (folder / "summary.csv").open(newline="", encoding="utf-8") as handle:
        return {row["case"]: row for row in csv.DictReader(handle)}


def test_the_check_banner_leaves_every_image_pixel_unchanged():
    """The banner used to cover the top tenth of a 256-pixel overlay, where the liver dome is."""
    slice01 = np.random.default_rng(0).random((256, 300))
    mask = np.zeros((256, 300), bool)
    mask[5:120, 40:200] = True  # liver up to the top of the picture
    rgb = overlay_rgb(slice01, mask)
    marked = mark_for_check(rgb)
    band = check_band_height(rgb.shape[1])
    assert marked.shape == (band + 256 + FRAME, 300 + 2 * FRAME, 3)
    np.testing.assert_array_equal(marked[band:band + 256, FRAME:FRAME + 300], rgb)
    outside = np.ones(marked.shape[:2], bool)
    outside[band:band + 256, FRAME:FRAME + 300] = False
    colours = {tuple(int(v) for v in pixel) for pixel in marked[outside]}
    assert colours == {CHECK_RGB, (255, 255, 255)}  # red frame and band, white letters
    assert (marked[:band] == 255).all(axis=2).sum() > 200  # "CHECK QUALITY" is written in the band


@pytest.mark.needs_shared
def test_fail_on_check_exits_3_with_every_output_written(tmp_path):
    out = tmp_path / "out"
    common = ["-o", str(out), "--model", "unet", "--device", "cpu", "-q"]
    assert run_cli(str(GOOD_CASE), str(FOREIGN_MR), "--fail-on-check", *common) == 3
    rows = _summary(out)
    good, foreign = rows["chaos_mr_t2spir_20_image"], rows["example_mr_sm"]
    assert good["quality"] == "ok" and foreign["quality"].startswith("check: liver volume")
    for row in (good, foreign):
        assert row["status"] == "ok"
        assert all(Path(row[key]).is_file() for key in ("mask", "segmentation", "overlay"))
        assert all(row[key] != "" for key in QUALITY_COLUMNS)
    assert float(foreign["uncertain_share"]) > 0.25 and float(good["uncertain_share"]) < 0.25
    # the foreign MR scan passes every scan check: the message names what looks wrong
    assert foreign["message"].startswith("the network is unsure of this scan: it probably differs from the MR")
    # skipped on a rerun: the earlier row still counts; without the option the exit status stays 0
    assert run_cli(str(FOREIGN_MR), "--fail-on-check", *common) == 3
    assert run_cli(str(FOREIGN_MR), *common) == 0
    assert run_cli(str(GOOD_CASE), "--fail-on-check", *common) == 0


@pytest.mark.needs_shared
def test_ct_remedy_is_spelled_for_the_command_line_and_for_python(tmp_path):
    out = tmp_path / "out"
    assert run_cli(str(FOREIGN_CT), "-o", str(out), "--model", "unet", "--device", "cpu", "-q") == 0
    message = _summary(out)["example_ct_sm"]["message"]
    assert "the intensities look like CT Hounsfield units" in message
    assert "or at least the CT intensity preset (--modality CT)" in message and 'intensity="CT"' not in message
    result = segment_image(sitk.ReadImage(str(FOREIGN_CT)), model="unet", device="cpu", probability=False)
    (warning,) = result.provenance.warnings
    assert 'or at least the CT intensity preset (intensity="CT")' in warning and "--modality" not in warning


@pytest.mark.needs_shared
def test_foreign_mr_scan_gets_a_hint_and_the_committed_measures():
    """The default weights on TotalSegmentator's MR example (another sequence): verdict, hint, and the measures of
    the committed calibration table (re-run here, cheap: 20 small slices)."""
    result = segment_image(sitk.ReadImage(str(FOREIGN_MR)), device="cpu", probability=False)
    verdict = result.quality  # the verdict object: status, reasons, measures, hint
    assert verdict is result.provenance.quality and verdict.status == "check"
    assert verdict.hint.startswith("the network is unsure of this scan")
    assert "MR T2-SPIR" in verdict.hint and result.provenance.warnings == []  # no scan check warned
    with CALIBRATION.open(newline="", encoding="utf-8") as handle:
        (row,) = [r for r in csv.DictReader(handle) if (r["model"], r["case"]) == ("T", "totalseg_mr")]
    assert verdict.summary() == row["verdict"]
    assert verdict.measures["liver_ml"] == pytest.approx(float(row["liver_ml"]), rel=0.02)
    for key in ("uncertain_share", "outside_share"):
        assert verdict.measures[key] == pytest.approx(float(row[key]), abs=0.01)


@pytest.fixture(scope="module")
def srma_mr_weights(tmp_path_factory) -> Path:
    """Seeded SRMA-Mamba weights whose card says they were trained on MRI (T2)."""
    path = save_checkpoint(tmp_path_factory.mktemp("srma") / "srma_mr.pth", srma_seeded_state_dict(0))
    write_model_card(path, ModelCard(variant="SRMA", inference="window-3d", window=(128, 128, 32), overlap=0.0,
                                     modality="MRI", sequence="T2"))
    return path


@pytest.mark.needs_shared
def test_srma_gets_the_scan_checks(srma_mr_weights):
    """The 3D path used to return before the scan checks: --strict and the CT warning never reached SRMA-Mamba."""
    ct = sitk.ReadImage(str(FOREIGN_CT))
    with pytest.raises(ScanMismatchError, match="look like CT Hounsfield units"):
        segment_image(ct, weights=srma_mr_weights, device="cpu", strict=True)
    result = segment_image(ct, weights=srma_mr_weights, device="cpu", probability=False)
    assert result.provenance.variant == "SRMA"
    (warning,) = result.provenance.warnings[:1]
    assert warning.startswith("the intensities look like CT Hounsfield units (air at -1000) but the weights were "
                              "trained on MRI T2") and warning.endswith("use weights trained on CT")


def test_crossval_table_reads_the_measures_from_summary_columns_or_seg_nrrd_tags(tmp_path):
    """Summaries written before the measure columns existed still give the measures, from the .seg.nrrd tags."""
    mask = sitk.GetImageFromArray(np.ones((2, 3, 4), np.uint8))
    seg = write_liver_seg_nrrd(mask, tmp_path / "b.seg.nrrd", {
        "RMAMamba.Quality": "ok", "RMAMamba.QualityMeasures": "liver_ml=1646 uncertain_share=0.1464 "
        "outside_share=0.0001 components=1 extent_mm=154 liver_slices=20"})
    summary = tmp_path / "summary.csv"
    columns = ["case", "quality", "segmentation", "liver_ml", *QUALITY_COLUMNS]
    with summary.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerow({"case": "a", "quality": "ok", "liver_ml": 1500, "uncertain_share": 0.2, "outside_share": 0.07,
                         "components": 2, "extent_mm": 170, "liver_slices": 22})
        writer.writerow({"case": "b", "quality": "ok", "segmentation": str(seg)})
    evaluation = tmp_path / "evaluation.csv"
    evaluation.write_text("case,dice,hd95_mm,pred_ml,ref_ml\na,0.9,5,1500,1400\nb,0.88,6,1646,1700\n"
                          "mean,0.89,5.5,1573,1550\n")
    rows = crossval_table(evaluation, summary, {"a": 1, "b": 2})
    assert [row["outside_share"] for row in rows] == [0.07, 0.0001]
    assert rows[1]["liver_slices"] == 20.0 and rows[0]["uncertain_share"] == 0.2
    path = write_crossval_csv(rows, tmp_path / "crossval.csv")
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        written = list(reader)
    assert tuple(reader.fieldnames) == CROSSVAL_COLUMNS
    assert written[1]["outside_share"] == "0.000100" and written[2]["case"] == "mean"
