from __future__ import annotations

import pytest

from tests.strategies.helpers import tiny_tasks


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """T1 (clicks), T2 (liked), T4 (gender) of the bundled MovieLens-100K, first 300 users, real rows."""
    tasks = tiny_tasks(tmp_path_factory.mktemp("ml100k"))
    return [tasks[0], tasks[1], tasks[3]]
