"""Files in and out: reading NIfTI/NRRD/MHA/DICOM with integrity checks, case pairing, .seg.nrrd, overlays."""
