"""The segmentation worker: a separate Python process that runs the network for the Slicer panel.

* :mod:`.protocol` -- the messages (JSON lines) and the files (``.npy`` / JSON) exchanged with the worker.
* :mod:`.server` -- the worker's main loop (``python -m RMAMambaSegmentationLib.worker``).
* :mod:`.client` -- starts the worker with Slicer's own Python and talks to it.
* :mod:`.model_cache` -- the loaded network kept between runs (inside the worker).
* :mod:`.runtime_info` -- what the panel says about weights and devices before a run.

Nothing here touches MRML; :class:`RMAMambaSegmentationLib.mrml.segmentation_logic.SegmentationLogic` writes the
worker's result into the scene.
"""
