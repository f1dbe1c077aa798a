"""benchmarks.compare's rendering on hand-made results (no training): tables, checks and PNGs."""
from benchmarks.studies.render import paired, render
from benchmarks.studies.settings import get_study


def fake_report(first_t1: float, last_t1: float, t3: float) -> dict:
    m = [[first_t1, None, None], [last_t1, 0.02, None], [last_t1, 0.02, t3]]
    return {"matrix": m, "final": m[-1], "bwt": (last_t1 - first_t1) / 2, "fwt": 0.0, "backbones": 1,
            "storage_bytes": 1_000_000, "tasks": ["clicks", "liked", "loved"]}


def fake_seed(t3_conure: float) -> dict:
    table2 = {"sinmoall": fake_report(0.04, 0.01, 0.03), "fineall": fake_report(0.04, 0.04, 0.030),
              "conure": fake_report(0.04, 0.04, t3_conure)}
    sweep = {"unpruned": 0.02, "ratios": {"0.5": {"pruned": 0.01, "retrained": 0.021, "valid_per_epoch": [0.01, 0.02]},
                                          "0.95": {"pruned": 0.0, "retrained": 0.01, "valid_per_epoch": [0.0, 0.01]}}}
    return {"table2": table2, "sweep": {"fig4_clicks": sweep, "fig6_liked": sweep}}


def test_render_writes_tables_checks_and_figures(tmp_path):
    results = {"meta": {"command": "python -m benchmarks.compare --preset smoke", "preset": "smoke", "note": "n",
                        "seeds": 2, "studies": ["table2", "sweep"], "device": "cpu", "wall_s": 1.0},
               "seeds": {"0": fake_seed(0.034), "1": fake_seed(0.036)}}
    text, headline = render(results, tmp_path)
    assert (tmp_path / "results.md").read_text() == text
    assert "| SinMoAll | 0.0100 ± 0.0000 |" in text
    assert headline["sinmoall_t1_drop_fraction"] == 0.75
    assert headline["conure_max_earlier_task_change"] == 0.0
    assert abs(headline["conure_minus_fineall_t3"] - 0.005) < 1e-12
    assert headline["fig6_liked_first_ratio_not_recovered"] == 0.95  # 0.01 / 0.02 < 95 %
    assert "SinMoAll forgets T1 (paper: loses 94 % of T1's MRR@5 on ML): here it loses 75 % -> agrees." in text
    assert "Conure beats FineAll on T3 (paper ML: +8.6 %): here +16.7 %" in text
    for png in ("accuracy_matrices.png", "pruning_t1.png", "pruning_t2.png"):
        assert (tmp_path / "figures" / png).stat().st_size > 1000


def test_paired_by_hand():
    p = paired([0.3, 0.5, 0.4], [0.1, 0.2, 0.3])  # diffs .2, .3, .1: mean .2, sd .1, t = .2 / (.1 / sqrt 3)
    assert abs(p["mean"] - 0.2) < 1e-12 and abs(p["sd"] - 0.1) < 1e-12
    assert abs(p["t"] - 0.2 / (0.1 / 3 ** 0.5)) < 1e-9 and p["wins"] == 3


def test_study_presets():
    from conure_core.config import get_preset

    quick = get_study("quick", seed=2)
    learner = get_preset("quick")
    assert quick.preset.model.seed == 2 and quick.preset.later == learner.later and quick.preset.first == learner.first
    smoke = get_study("smoke")
    assert smoke.preset.model.width == 32 and smoke.preset.model.dilations == [1, 4]
    assert smoke.preset.first.patience == smoke.preset.first.epochs


def test_a_study_whose_t1_holds_a_table_says_so(tmp_path):
    tcn = get_study("quick-tcn")
    assert (tcn.preset.model.t1_wide, tcn.preset.model.class_repr) == ("none", None)
    assert get_study("quick").preset.model.t1_wide == "auto"
    meta = {"command": "c", "preset": "quick", "note": "n", "seeds": 2, "studies": ["table2"], "device": "cpu",
            "wall_s": 1.0, "preset_values": {"model": {"t1_wide": "cooccur"}}}
    seeds = {"0": fake_seed(0.034), "1": fake_seed(0.036)}
    text, _ = render({"meta": meta, "seeds": seeds}, tmp_path)
    assert "the T1 column, SinMoAll's T1 forgetting and the T1 pruning sweep mostly measure that table" in text
    assert "here it loses 75 % -> agrees (masked: T1 holds a co-occurrence table no strategy changes" in text
    meta["preset_values"]["model"]["t1_wide"] = "none"
    text, _ = render({"meta": meta, "seeds": seeds}, tmp_path)
    assert "masked" not in text and "mostly measure that table" not in text
