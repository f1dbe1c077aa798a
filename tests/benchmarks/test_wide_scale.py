"""benchmarks.wide_scale on a small catalogue: it runs, and its JSON line names its figures."""
import json

import pytest

from benchmarks import wide_scale


def test_wide_scale_runs_small(capsys):
    wide_scale.main(["--items", "500", "--users", "300", "--length", "8", "--valid", "40", "--batch", "4"])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    f = out["figures"]
    assert out["benchmark"] == "wide_scale" and f["items"] == 500 and f["k"] in (20, 50, 100, 200)
    assert f["dense_table_gib"] == pytest.approx(500 * 500 * 4 / 2 ** 30, abs=1e-6)  # figures carry 6 decimals
    assert f["table_gib"] < f["dense_table_gib"]
    assert f["bag_input_mib"] == pytest.approx(4 * (64 + 8) * 4 / 2 ** 20, abs=1e-6)  # 4 users x (64 pooled + 8 slots)
