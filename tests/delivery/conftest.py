"""Delivery fixtures: the same real SMTP server and webhook receiver the lifecycle tests use."""

from tests.lifecycle.conftest import client, mailbox, settings, trickler, webhook  # noqa: F401 - pytest fixtures
