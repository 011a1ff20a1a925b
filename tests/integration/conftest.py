"""Integration-test settings shared by every file here."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _no_feed_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    """A site without [mqtt] publishes to 127.0.0.1:1883 whenever a broker answers ("auto"): the commands run by
    these tests (and the processes they start) must not fill the shared test broker with retained topics. Tests of
    the feed pass --mqtt URL, which overrides this."""
    if "FORMATION_MQTT_ENABLED" not in os.environ:
        monkeypatch.setenv("FORMATION_MQTT_ENABLED", "no")
