"""The "Liver" segment's identity, shared by the MRML writer and the ``.seg.nrrd`` files: name, terminology, colour.

The terminology is the serialised entry Slicer's Terminologies module writes for SNOMED CT 10200004 "Liver"
(category 123037004 "Anatomical Structure") in the default context "3D Slicer General Anatomy list", so Segment
Editor, DICOM SEG export and other modules recognise the segment without any terminology file being loaded.
"""

from __future__ import annotations

LIVER_SEGMENT_NAME = "Liver"
#: SNOMED CT code of the liver (segmented property type).
LIVER_SNOMED_CODE = "10200004"
#: What ``vtkSlicerTerminologiesModuleLogic.SerializeTerminologyEntry`` produces for the liver.
LIVER_TERMINOLOGY = (
    "Segmentation category and type - 3D Slicer General Anatomy list"
    f"~SCT^123037004^Anatomical Structure~SCT^{LIVER_SNOMED_CODE}^Liver~^^"
    "~Anatomic codes - DICOM master list~^^~^^"
)
#: Conventional liver colour of the General Anatomy list, RGB 0-255 and 0-1.
LIVER_COLOR_RGB255 = (221, 130, 101)
LIVER_COLOR = tuple(c / 255.0 for c in LIVER_COLOR_RGB255)
