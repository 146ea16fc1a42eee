"""detection_eval.feedback_eval: a benign pattern marked false once stops alerting; a real
fault on the same machine afterwards still alerts (the product's detector and episodes)."""

from __future__ import annotations

from detection_eval.feedback_eval import Arm, format_results, run_arm

MINUTES = 100  # benign patterns at minutes 40 and 60, the real fault at 75


def test_a_false_alarm_quiets_the_repeats_and_the_overload_still_alerts() -> None:
    plain = run_arm(Arm("overload", feedback=False), MINUTES, seed=42)
    marked = run_arm(Arm("overload", feedback=True), MINUTES, seed=42)
    assert (plain.patterns, plain.patterns_alerted) == (2, 2)
    assert plain.alerted_after_mark is None and plain.raise_given is None
    assert (marked.patterns_alerted, marked.alerted_after_mark, marked.repeats_after_mark) == (
        1,
        0,
        1,
    )
    assert marked.lead_feature == "vibration" and 0 < marked.raise_given <= 0.05
    assert plain.fault_alerted and marked.fault_alerted
    assert marked.fault_latency_s == plain.fault_latency_s  # a load-led fault: untouched
    assert plain.other_alerts == marked.other_alerts == 0
    table = format_results([plain, marked], MINUTES, 42)
    assert "false alarm on the first, then overload" in table and "0 of 1" in table
