import os
import sys

import matplotlib
import pytest

# test modules share helpers (file_writers.py) by plain import, whatever pytest's import mode
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

matplotlib.use("Agg")


@pytest.fixture(autouse=True)
def _no_progress_bars(monkeypatch):
    # tqdm writes to stderr; keep the test log readable
    monkeypatch.setenv("TQDM_DISABLE", "1")


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny networks train and predict fastest on one torch thread on a shared 2-core machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
