"""bench/matched_cost.py: a frame's cost from a run's evaluations, and the choice of m by cost."""

import math

import pytest

from bench import matched_cost


def _run(root, task, label, rows):
    log = root / task / f"{label}.seed100" / "log"
    log.mkdir(parents=True)
    (log / f"{label}.seed100.greedy.csv").write_text(
        "".join(f"{h},{e},{f},{s}\n" for h, e, f, s in rows))


def test_cost_is_hours_between_the_marks_per_frame(tmp_path):
    # evaluations end at 4,000, 5,000, 7,000 and 10,000 frames; hours 0.1, 0.2, 0.3, 0.5
    _run(tmp_path, "T", "steve_td3", [(0.1, 1, 4000, 1), (0.2, 2, 5000, 1), (0.3, 3, 7000, 1),
                                      (0.5, 4, 10000, 1)])
    cost = matched_cost.frame_cost(tmp_path / "T/steve_td3.seed100", 5000, 10000)
    assert cost == pytest.approx(3600 * 0.3 / 5000)
    with pytest.raises(matched_cost.CostError, match="only up to 10000 frames, not 20000"):
        matched_cost.frame_cost(tmp_path / "T/steve_td3.seed100", 5000, 20000)


def test_the_multiplier_nearest_in_cost_is_chosen_and_scores_are_not_read(tmp_path, capsys):
    for task, steve in (("A", 1.0), ("B", 2.0)):
        # td3_x<m> costs m/4.5 of steve_td3 on A and m/3.5 on B; scores are wild and unused
        for label, scale in (("steve_td3", 1.0), ("td3_x3", None), ("td3_x4", None),
                             ("td3_x6", None)):
            m = int(label[-1]) if scale is None else None
            ratio = scale if scale is not None else m / (4.5 if task == "A" else 3.5)
            per_hour = steve * ratio / 3600  # hours per frame
            _run(tmp_path, task, label, [(5000 * per_hour, 1, 5000, -1e9 * (m or 1)),
                                         (10000 * per_hour, 2, 10000, 1e9)])
    assert matched_cost.main([str(tmp_path), "--tasks", "A,B"]) == 0
    out = capsys.readouterr().out
    # |log| means: x3: (log 1.5 + log(3.5/3)) / 2; x4: (log(4.5/4) + log(4/3.5)) / 2; x6: ...
    assert "chosen_multiplier=4" in out
    m, score = matched_cost.choose({"A": {"steve_td3": 1.0, "td3_x3": 3 / 4.5, "td3_x4": 4 / 4.5},
                                    "B": {"steve_td3": 1.0, "td3_x3": 3 / 3.5,
                                          "td3_x4": 4 / 3.5}}, [3, 4])
    assert m == 4 and score[3] == pytest.approx((math.log(1.5) + math.log(3.5 / 3)) / 2)
