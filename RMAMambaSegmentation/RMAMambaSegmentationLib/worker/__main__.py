"""``python -m RMAMambaSegmentationLib.worker``: run the segmentation worker (started by :mod:`.client`)."""

from RMAMambaSegmentationLib.worker.server import main

if __name__ == "__main__":
    raise SystemExit(main())
