"""Anomaly episodes: one Slack message when an episode opens, one when it resolves,
and one PNG per machine with anomalies (linked from the messages)."""

if "custom" not in globals():
    from mage_ai.data_preparation.decorators import custom, test

from influx_magic.pipeline import RunContext, check


@custom
def check_anomalies(data, *args, **kwargs):
    return check(data, RunContext.from_kwargs(kwargs))


@test
def test_output(output, *args) -> None:
    assert "episode_id" in output.columns
    inside = output["in_episode"].astype(bool) & (output["status"] == "scored")
    assert output.loc[inside, "episode_id"].notna().all()
