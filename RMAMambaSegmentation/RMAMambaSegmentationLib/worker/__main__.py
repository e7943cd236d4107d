"""``python -m RMAMambaSegmentationLib.worker``: run the segmentation worker (started by :mod:`.client`)."""

from RMAMambaSegmentationLib.volume import devices

# Both settings are read when torch loads, so they come before the server module (which imports it).
devices.enable_mps_fallback()
devices.enable_passive_thread_wait()

from RMAMambaSegmentationLib.worker.server import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
