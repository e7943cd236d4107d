"""The Slicer panel's decisions, without Qt: :mod:`.controller` (states, texts, buttons) and :mod:`.reload`."""
