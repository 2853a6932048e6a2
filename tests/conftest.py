import matplotlib
import pytest

matplotlib.use("Agg")


@pytest.fixture(autouse=True)
def _no_progress_bars(monkeypatch):
    # tqdm writes to stderr; keep the test log readable
    monkeypatch.setenv("TQDM_DISABLE", "1")
