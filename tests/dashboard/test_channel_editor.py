"""The channel editor: typed settings per kind, the kind's own checks, audit and access."""

from __future__ import annotations

import pytest
from django.urls import reverse

from monitoring.models import AuditLog, Channel, Route


def post(client, url, **data):
    return client.post(url, {"enabled": "on", **data})


def test_an_admin_adds_a_slack_channel_with_a_reference(client, admin_user):
    client.force_login(admin_user)
    response = post(
        client, reverse("channel_new"), name="ops", kind="slack",
        s_slack_url="${UPSTREAM_SECRET_SLACK_URL}",
    )  # fmt: skip
    assert response.status_code == 302
    channel = Channel.objects.get()
    assert (channel.kind, channel.settings) == ("slack", {"url": "${UPSTREAM_SECRET_SLACK_URL}"})
    assert AuditLog.objects.filter(action="create", target_id=str(channel.pk)).exists()


def test_a_literal_secret_is_refused_with_the_kinds_message(client, admin_user):
    client.force_login(admin_user)
    response = post(
        client, reverse("channel_new"), name="ops", kind="slack",
        s_slack_url="https://hooks.slack.com/services/T0/B0/abcdef",
    )  # fmt: skip
    assert response.status_code == 400
    html = response.content.decode()
    assert "url carries a credential" in html
    assert not Channel.objects.exists()
    assert "abcdef" not in str(list(AuditLog.objects.values("after")))


def test_email_addresses_are_checked_and_stored_as_a_list(client, admin_user):
    client.force_login(admin_user)
    bad = post(client, reverse("channel_new"), name="mail", kind="email",
               s_email_addresses="ops@example.com\nnot-an-address")  # fmt: skip
    assert bad.status_code == 400 and "is not an e-mail address" in bad.content.decode()
    post(client, reverse("channel_new"), name="mail", kind="email",
         s_email_addresses="ops@example.com\nsre@example.com")  # fmt: skip
    assert Channel.objects.get().settings == {"addresses": ["ops@example.com", "sre@example.com"]}


def test_a_missing_required_setting_is_named(client, admin_user):
    client.force_login(admin_user)
    response = post(client, reverse("channel_new"), name="pd", kind="pagerduty")
    assert response.status_code == 400
    assert "Missing setting routing_key" in response.content.decode()


def test_editing_shows_the_stored_settings_and_keeps_names_unique(client, admin_user):
    Channel.objects.create(name="taken", kind="email", settings={"addresses": ["a@example.com"]})
    channel = Channel.objects.create(
        name="ops", kind="ntfy", settings={"url": "https://ntfy.sh/upstream"}
    )
    client.force_login(admin_user)
    page = client.get(reverse("channel_edit", args=[channel.pk])).content.decode()
    assert 'value="https://ntfy.sh/upstream"' in page
    clash = post(client, reverse("channel_edit", args=[channel.pk]), name="taken", kind="ntfy",
                 s_ntfy_url="https://ntfy.sh/upstream")  # fmt: skip
    assert clash.status_code == 400 and "Another channel has this name." in clash.content.decode()
    token = "${UPSTREAM_SECRET_NTFY_TOKEN}"
    edit = reverse("channel_edit", args=[channel.pk])
    post(
        client,
        edit,
        name="ops",
        kind="ntfy",
        s_ntfy_url="https://ntfy.sh/other",
        s_ntfy_token=token,
    )
    channel.refresh_from_db()
    assert channel.settings == {
        "url": "https://ntfy.sh/other",
        "token": "${UPSTREAM_SECRET_NTFY_TOKEN}",
    }


def test_delete_asks_first_and_names_the_routes(client, admin_user):
    channel = Channel.objects.create(name="ops", kind="email", settings={"addresses": ["a@b.co"]})
    route = Route.objects.create(name="default", is_default=True)
    route.channels.set([channel])
    client.force_login(admin_user)
    page = client.get(reverse("channel_delete", args=[channel.pk])).content.decode()
    assert "default" in page and Channel.objects.exists()
    client.post(reverse("channel_delete", args=[channel.pk]))
    assert not Channel.objects.exists()
    assert AuditLog.objects.filter(action="delete").exists()


@pytest.mark.parametrize("role", ["viewer", "operator"])
def test_only_admins_edit_channels(client, db, request, role):
    channel = Channel.objects.create(name="ops", kind="email", settings={"addresses": ["a@b.co"]})
    client.force_login(request.getfixturevalue(role))
    assert client.get(reverse("channel_new")).status_code == 403
    assert client.post(reverse("channel_delete", args=[channel.pk])).status_code == 403
    assert Channel.objects.exists()
