"""/metrics (Prometheus, scraper networks only) and /ws-metrics (staff only)."""

import ipaddress

import pytest

pytestmark = pytest.mark.django_db


def test_prometheus_metrics_from_loopback(client):
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    body = response.content.decode()
    for name in (
        "emergence_ws_active_sockets",
        "emergence_ws_connects_total",
        "emergence_ws_disconnects_total",
        "emergence_db_retry_outcomes_total",
        "emergence_detach_cleanups_total",
        "emergence_replayed_messages_total",
        "emergence_replays_total",
        "emergence_messages_stored_total",
        "emergence_message_handling_seconds",
        "emergence_detach_pending",
    ):
        assert name in body, name
    assert "_created" not in body  # prometheus_client's extra series are off
    assert "emergence_db_reconnect_attempts" not in body


def test_prometheus_metrics_refused_outside_the_scraper_networks(client, settings):
    settings.METRICS_ALLOWED_NETWORKS = [ipaddress.ip_network("10.0.0.0/8")]
    assert client.get("/metrics").status_code == 403
    settings.METRICS_ALLOWED_NETWORKS = []
    assert client.get("/metrics").status_code == 200


def test_ws_metrics_needs_a_staff_user(client, alice, make_user, password, token_for):
    assert client.get("/ws-metrics").status_code == 401
    bearer = {"HTTP_AUTHORIZATION": f"Bearer {token_for(alice)}"}
    assert client.get("/ws-metrics", **bearer).status_code == 403
    staff = make_user("ops", is_staff=True)
    assert (
        client.get("/ws-metrics", HTTP_AUTHORIZATION="Bearer nope").status_code == 401
    )
    client.force_login(staff)
    response = client.get("/ws-metrics")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["metrics"]) == {
        "total_users_tracked",
        "top_disconnects",
        "all_reasons",
        "last_disconnect",
        "frequent_disconnectors",
    }
