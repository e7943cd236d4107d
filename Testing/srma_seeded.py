"""SRMA-Mamba weights from the official fixtures' seeded recipe (shared by the SRMA tests)."""

from __future__ import annotations

import importlib.util

import torch

from conftest import OFFICIAL
from RMAMambaSegmentationLib import build_model

#: Digest of the seed-0 weights the official reference tensors were computed with (fixtures README).
SEEDED_DIGEST = "21fddf70e527cc707f5385e88b62f2e9d8b5fe2dfc5011e5626a7b44a281ceaf"


def srma_seeded_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """SRMA-Mamba weights from ``seeded_weights.py``, made from this project's own key names and shapes."""
    spec = importlib.util.spec_from_file_location("seeded_weights", OFFICIAL / "seeded_weights.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    with torch.device("meta"):
        skeleton = build_model("SRMA")
    state = recipe.seeded_state_dict([(k, tuple(t.shape)) for k, t in skeleton.state_dict().items()], seed=seed)
    if seed == 0:
        assert recipe.state_dict_digest(state) == SEEDED_DIGEST
    return {key: torch.as_tensor(value) for key, value in state.items()}


def seeded_srma(seed: int = 0, scan_backend: str = "chunked") -> torch.nn.Module:
    """SRMA-Mamba in eval mode with the seeded weights."""
    model = build_model("SRMA", scan_backend=scan_backend)
    model.load_state_dict(srma_seeded_state_dict(seed), strict=True)
    return model.eval()
