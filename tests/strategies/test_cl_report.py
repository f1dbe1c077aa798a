import math

import pytest

from conure_core.cl_report import ReportError, backward_transfer, build_report, forgetting, forward_transfer

# R[i][j]: task j after learning task i (hand-made, 3 tasks).
R = [[0.50, None, None],
     [0.40, 0.20, None],
     [0.30, 0.25, 0.60]]


def test_backward_transfer_by_hand():
    # ((0.30 - 0.50) + (0.25 - 0.20)) / 2 = -0.075
    assert backward_transfer(R) == pytest.approx(-0.075)
    # ((0.30/0.50 - 1) + (0.25/0.20 - 1)) / 2 = (-0.4 + 0.25) / 2 = -0.075
    assert backward_transfer(R, relative=True) == pytest.approx(-0.075)


def test_forgetting_by_hand():
    # task 0: best 0.50, final 0.30 -> 0.20; task 1: best 0.25, final 0.25 -> 0; task 2: 0
    assert forgetting(R) == pytest.approx([0.20, 0.0, 0.0])


def test_forward_transfer_by_hand():
    reference = [0.50, 0.10, 0.50]
    # ((0.20 - 0.10) + (0.60 - 0.50)) / 2 = 0.10 ; relative ((1.0) + (0.2)) / 2 = 0.6
    assert forward_transfer(R, reference) == pytest.approx(0.10)
    assert forward_transfer(R, reference, relative=True) == pytest.approx(0.6)
    assert forward_transfer(R, None) is None


def test_build_report_fields():
    rep = build_report("x", ["a", "b", "c"], ["mrr@5"] * 3, R, backbones=1, storage_bytes=123,
                       reference=[0.5, 0.1, 0.5])
    assert rep.final == [0.30, 0.25, 0.60]
    assert rep.final_average == pytest.approx((0.30 + 0.25 + 0.60) / 3)
    assert rep.bwt == pytest.approx(-0.075) and rep.fwt == pytest.approx(0.10)
    assert rep.matrix[0][1] is None and rep.to_dict()["storage_bytes"] == 123


def test_no_forgetting_gives_zero_bwt():
    same = [[0.5, None], [0.5, 0.2]]
    assert backward_transfer(same) == 0.0 and forgetting(same) == [0.0, 0.0]


def test_malformed_matrix_is_one_clear_error():
    with pytest.raises(ReportError, match=r"R\[1\]\[1\]"):
        build_report("x", ["a", "b"], ["m", "m"], [[0.1, None], [0.1, None]], backbones=1, storage_bytes=0)
    with pytest.raises(ReportError, match="row 0 has 1 entries"):
        backward_transfer([[0.1], [0.1, 0.2]])
    with pytest.raises(ReportError, match="expected 2"):
        forward_transfer([[0.1, None], [0.1, 0.2]], [0.1])
    with pytest.raises(ReportError):
        backward_transfer([[math.nan]])
