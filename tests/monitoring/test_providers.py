"""Tests for the provider presets data module."""

from __future__ import annotations

import pytest

from monitoring import providers


def test_the_generic_guide_is_the_default():
    assert providers.get(providers.DEFAULT) is providers.GENERIC


def test_an_unknown_preset_names_the_known_ones():
    with pytest.raises(KeyError, match="openpanel"):
        providers.get("nope")


def test_paubox_publishes_no_rate_limit_headers_so_no_headroom_rule():
    paubox = providers.get("paubox")
    assert paubox.rate_limit_headers == ()
    assert "rate_limit_headroom" not in paubox.rules
    assert "Token token=" in paubox.auth_schemes


def test_openpanel_signs_in_then_calls_whoami_with_the_extracted_token():
    openpanel = providers.get("openpanel")
    assert openpanel.token_lifetime_s == 900
    steps = next(p for p in openpanel.probes if "steps" in p)["steps"]
    assert steps[0]["extract"] == {"access_token": "$.access_token"}
    assert steps[1]["headers"]["Authorization"] == "Bearer {{access_token}}"


def test_the_presets_command_lists_every_preset():
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    call_command("presets", stdout=out)
    for name in providers.ALL:
        assert name in out.getvalue()
