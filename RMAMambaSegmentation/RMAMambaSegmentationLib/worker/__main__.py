"""``python -m RMAMambaSegmentationLib.worker``: run the segmentation worker (started by :mod:`.client`)."""

from RMAMambaSegmentationLib.runtime import devices

# Read when torch loads, so it comes before the server module (which imports torch).
devices.enable_mps_fallback()

from RMAMambaSegmentationLib.worker.server import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
