"""The capacity forecast: hand-computed shares taken per task, the average task, how many more fit."""
from conure_core.capacity import forecast, warning

FREE = [{"a": 0.7, "b": 0.7, "total": 0.7}, {"a": 0.56, "b": 0.42, "total": 0.49}, {"a": 0.5, "b": 0.3, "total": 0.4}]


def test_forecast_per_tensor_and_overall():
    cap = forecast(["t1", "t2", "t3"], FREE, min_free=0.1)
    a, b, total = cap["layers"]["a"], cap["layers"]["b"], cap["layers"]["total"]
    assert a["taken"] == {"t1": 0.3, "t2": 0.14, "t3": 0.06} and a["average"] == 0.1 and a["fits"] == 4  # (0.5-0.1)/0.1
    assert b["taken"] == {"t1": 0.3, "t2": 0.28, "t3": 0.12} and b["average"] == 0.2 and b["fits"] == 1  # 0.2/0.2
    assert total["average"] == 0.15 and total["fits"] == 2  # (0.4 - 0.1) / 0.15
    assert cap["fits"] == 1  # the tightest tensor decides


def test_forecast_after_t1_alone_uses_its_size_and_nothing_taken_fits_unbounded():
    assert forecast(["t1"], FREE[:1])["layers"]["total"] == {"free": 0.7, "taken": {"t1": 0.3}, "average": 0.3,
                                                              "fits": 2}
    assert forecast(["t1", "t2"], [{"total": 1.0}, {"total": 1.0}])["fits"] is None
    assert forecast([], []) == {"min_free": 0.0, "layers": {}, "fits": None}


def test_warning_says_what_to_do_only_below_min_free():
    assert warning("t4", 0.4, 0.8, 0.15, 0.3) is None  # 0.4 * 0.8 = 0.32 stays above 0.3
    msg = warning("t4", 0.4, 0.7, 0.15, 0.3)  # 0.28 < 0.3
    assert msg == ("capacity: learning 't4' is expected to leave 28.0% of the backbone's prunable weights free (at "
                   "prune ratio 0.7; 40.0% free now), below min_free 30.0%; prune harder (a higher prune_ratio in "
                   "task.yaml or the preset), give a new lineage a wider backbone (model.width), or start a new "
                   "lineage for the next tasks.")
    assert "at the average task size (15.0%)" in warning("t4", 0.4, None, 0.15, 0.3)  # prune_ratio: auto
