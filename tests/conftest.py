import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
torch.manual_seed(0)


@pytest.fixture
def shared_dir() -> Path:
    """../shared beside the checkout (or $MATNET_SHARED): real specs and MATLAB-made fixtures."""
    p = Path(os.environ.get("MATNET_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
    if not p.is_dir():
        pytest.skip(reason=f"shared data folder absent: {p} (set MATNET_SHARED)")
    return p
