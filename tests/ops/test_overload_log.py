"""ops.overload_log: an overload episode in a few records, not one per socket."""

import logging

from ops.overload_log import OverloadLog


async def test_refusals_log_a_start_summaries_and_an_end_not_one_per_socket(caplog):
    caplog.set_level(logging.INFO, logger="ops.admission")
    log = OverloadLog()
    for _ in range(500):
        log.refused(in_progress=4, limit=4)
    log.tick()  # what the timer does every SUMMARY_SECONDS
    log.refused(in_progress=4, limit=4)
    log.tick()
    log.tick()  # a quiet period: the episode ends
    events = [(r.levelname, r.event) for r in caplog.records]
    assert events == [
        ("WARNING", "ws_overloaded"),
        ("WARNING", "ws_overloaded_summary"),
        ("WARNING", "ws_overloaded_summary"),
        ("INFO", "ws_overload_ended"),
    ]
    assert [r.refused for r in caplog.records[1:]] == [500, 1, 501]
    log.refused(in_progress=4, limit=4)  # a new episode starts with a new WARNING
    assert caplog.records[-1].event == "ws_overloaded"
