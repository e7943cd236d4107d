"""From a 3D image to a liver mask in patient space: orientation, intensities, inference, post-processing, I/O.

Modules (one concept each):

* ``orientation`` -- axial slices in radiological display orientation, and back (``AxialReorientation``).
* ``intensity`` -- MRI percentile, MRI tissue-median and CT window presets mapping voxels to [0, 1].
* ``preprocessing`` -- slices to the network's 3-channel 256x256 input and logits back to slice size.
* ``validation`` -- refusing images that cannot be segmented (``InvalidImageError``).
* ``file_integrity`` / ``dicom_checks`` -- refusing damaged files (cut or corrupt data, NaN voxels, DICOM series
  with missing, duplicated or mixed slices) before they are read.
* ``scan_check`` / ``quality`` -- before the network, does the scan fit the weights' model card; after it, the
  quality verdict (``ok`` / ``check`` with reasons) of every result.
* ``model_card`` / ``model_loading`` / ``devices`` -- what a checkpoint expects, loading it, where it runs.
* ``postprocessing`` -- largest 3D component and slice-wise hole filling.
* ``inference`` -- ``segment_image`` (SimpleITK) and ``segment_array`` (numpy + geometry, for the Slicer logic).
* ``run_options`` -- ``RunOptions``: the options of one run as one object (torch-free).
* ``image_io`` / ``seg_nrrd`` / ``png`` / ``overlay`` -- reading inputs, writing ``.seg.nrrd`` and the PNG overlay.
* ``batch`` / ``progress_bar`` -- ``segment_files`` for many inputs (``rmamamba segment``) and its console bar.
"""
