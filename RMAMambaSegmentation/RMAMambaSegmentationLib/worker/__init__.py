"""The segmentation worker: a separate Python process that runs the network for the Slicer panel.

* :mod:`.protocol` -- the messages (JSON lines) and the files (``.npy`` / JSON) exchanged with the worker.
* :mod:`.server` -- the worker's main loop (``python -m RMAMambaSegmentationLib.worker``).
* :mod:`.client` -- starts the worker (its own process tree) with Slicer's own Python, talks to it, stops it.

The loaded network kept between runs is :mod:`RMAMambaSegmentationLib.weights.cache`; what the panel says about
weights and devices before a run, :mod:`RMAMambaSegmentationLib.panel.runtime_info`.

Nothing here touches MRML; :class:`RMAMambaSegmentationLib.mrml.segmentation_logic.SegmentationLogic` writes the
worker's result into the scene.
"""
