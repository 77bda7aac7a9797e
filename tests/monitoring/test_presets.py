"""The preset registry: every provider's error shapes, diagnoses, templates, probes, checks."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from monitoring import parsing, presets, providers
from monitoring.models import RuleKind
from monitoring.presets.catalog import CATALOG

# One real-shaped failure body per provider, with the (code, message) it must give.
ERRORS = {
    "generic": (
        400,
        {"error": {"code": "invalid_field", "message": "name is required", "details": "name"}},
        ("invalid_field", "name is required: name"),
    ),
    "openpanel": (403, {"error": "Permission denied"}, ("", "Permission denied")),
    "paubox": (
        400,
        {
            "errors": [
                {
                    "code": 400,
                    "title": "Error validating message",
                    "details": "message 0: recipients can't be blank",
                }
            ]
        },
        ("400", "Error validating message: message 0: recipients can't be blank"),
    ),
    "stripe": (
        402,
        {
            "error": {
                "type": "card_error",
                "code": "card_declined",
                "decline_code": "insufficient_funds",
                "message": "Your card has insufficient funds.",
            }
        },
        ("insufficient_funds", "Your card has insufficient funds."),
    ),
    "github": (
        422,
        {
            "message": "Validation Failed",
            "errors": [{"resource": "Issue", "field": "title", "code": "missing_field"}],
            "documentation_url": "https://docs.github.com/rest/issues/issues#create-an-issue",
            "status": "422",
        },
        ("missing_field", "Validation Failed"),
    ),
    "openai": (
        429,
        {
            "error": {
                "message": "You exceeded your current quota.",
                "type": "insufficient_quota",
                "param": None,
                "code": "insufficient_quota",
            }
        },
        ("insufficient_quota", "You exceeded your current quota."),
    ),
    "anthropic": (
        529,
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
        ("overloaded_error", "Overloaded"),
    ),
    "twilio": (
        404,
        {
            "code": 20404,
            "message": "The requested resource was not found",
            "more_info": "https://www.twilio.com/docs/errors/20404",
            "status": 404,
        },
        (
            "20404",
            "The requested resource was not found: https://www.twilio.com/docs/errors/20404",
        ),
    ),
    "sendgrid": (
        400,
        {
            "errors": [
                {
                    "message": "The from email does not contain a valid address.",
                    "field": "from.email",
                    "help": None,
                }
            ]
        },
        ("from.email", "The from email does not contain a valid address."),
    ),
    "slack": (
        429,
        {"ok": False, "error": "ratelimited"},
        ("ratelimited", ""),
    ),
}


def _parsed(preset: presets.Preset | None, status: int, body: object) -> parsing.ParsedError:
    return parsing.parse_error(
        json.dumps(body).encode(), "application/json", preset=preset, status=status
    )


def test_the_catalog_has_the_seeds_and_the_seven_providers():
    assert set(presets.ALL) == set(ERRORS)
    assert len(CATALOG) == len(presets.ALL)  # no two records share a name
    assert presets.get(presets.DEFAULT).name == "generic"
    assert presets.choices()[0] == ("generic", "Generic platform guide")


def test_an_unknown_preset_names_the_known_ones():
    with pytest.raises(KeyError, match="openpanel"):
        presets.get("nope")


def test_the_first_module_name_still_reaches_the_registry():
    assert providers.get("paubox") is presets.get("paubox")
    assert providers.ALL is presets.ALL


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_each_provider_error_body_gives_its_code_and_message(name):
    status, body, expected = ERRORS[name]
    parsed = _parsed(presets.get(name), status, body)
    assert (parsed.code, parsed.message) == expected


def test_paubox_keeps_details_which_the_generic_reading_drops():
    status, body, _ = ERRORS["paubox"]
    assert "recipients" not in _parsed(None, status, body).message
    assert "recipients" in _parsed(presets.get("paubox"), status, body).message


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"message": "Invalid or missing API key"}, ("", "Invalid or missing API key")),
        ({"error": "Not found"}, ("", "Not found")),
    ],
)
def test_paubox_other_two_error_shapes(body, expected):
    parsed = _parsed(presets.get("paubox"), 404, body)
    assert (parsed.code, parsed.message) == expected


def test_a_body_the_preset_does_not_know_falls_back_to_the_generic_reading():
    parsed = _parsed(presets.get("stripe"), 502, {"message": "Bad gateway", "code": "E502"})
    assert (parsed.code, parsed.message) == ("E502", "Bad gateway")


def test_openpanel_says_when_api_access_is_disabled():
    body = {"error": "API access is disabled! Enable it in OpenAdmin > Settings."}
    parsed = _parsed(presets.get("openpanel"), 404, body)
    assert parsed.code == "api_disabled"
    assert parsed.message.startswith("API access is disabled!")
    # Without the preset it is only a 404 with a message.
    assert _parsed(None, 404, body).code == ""


@pytest.mark.parametrize(
    "message",
    ["Token has expired", "jwt expired", "The access token expired", "Session expired."],
)
def test_a_401_saying_the_token_expired_is_token_expired(message):
    parsed = _parsed(presets.get("generic"), 401, {"error": {"message": message}})
    assert parsed.code == "token_expired"


def test_an_expired_word_on_another_status_is_not_a_diagnosis():
    parsed = _parsed(presets.get("generic"), 400, {"error": {"message": "Token expired"}})
    assert parsed.code == ""


def test_openpanel_tells_an_expired_token_from_a_rejected_one_by_its_age():
    openpanel = presets.get("openpanel")
    message = "Missing or invalid token"
    assert openpanel.diagnose(401, "", message, token_age_s=16 * 60) == "token_expired"
    assert openpanel.diagnose(401, "", message, token_age_s=60) == "credentials_rejected"
    assert openpanel.diagnose(401, "", message) == ""  # age unknown: no guess
    assert presets.get("stripe").diagnose(401, "x", message, token_age_s=10**6) == "x"


def test_a_paubox_bulk_batch_over_fifty_is_flagged():
    paubox = presets.get("paubox")
    assert paubox.request_flags("POST", "/v1/acme/bulk_messages", 51) == ["batch_too_large"]
    assert paubox.request_flags("post", "/v1/acme/bulk_messages/", 51) == ["batch_too_large"]
    assert paubox.request_flags("POST", "/v1/acme/bulk_messages", 50) == []
    assert paubox.request_flags("POST", "/v1/acme/bulk_messages", None) == []
    assert paubox.request_flags("POST", "/v1/acme/messages", 60) == []
    assert paubox.request_flags("GET", "/v1/acme/bulk_messages", 60) == []
    assert presets.get("openpanel").request_flags("POST", "/api/bulk", 500) == []


@pytest.mark.parametrize(
    ("name", "base_url", "path", "template"),
    [
        ("paubox", "https://api.paubox.net/v1/acme", "/v1/acme/dynamic_templates/7",
         "/v1/{username}/dynamic_templates/{id}"),
        ("paubox", "http://127.0.0.1:8765/paubox/v1/sandbox", "/paubox/v1/sandbox/messages",
         "/paubox/v1/{username}/messages"),
        # The newer host has no username segment.
        ("paubox", "https://api.paubox.com/v1", "/v1/message_receipt", "/v1/message_receipt"),
        ("openpanel", "https://panel.example.com:2087/api/", "/api/users/alice",
         "/api/users/{username}"),
        ("stripe", "https://api.stripe.com/", "/v1/customers/cus_Q1w2E3r4T5y6",
         "/v1/customers/{customer}"),
        ("github", "https://api.github.com/", "/repos/octo/hello/issues/12",
         "/repos/{owner}/{repo}/issues/{issue_number}"),
        ("openai", "https://api.openai.com/v1", "/v1/files/file-abc123",
         "/v1/files/{file_id}"),
        ("anthropic", "https://api.anthropic.com/v1", "/v1/messages/batches/msgbatch_01",
         "/v1/messages/batches/{batch_id}"),
        ("twilio", "https://api.twilio.com/2010-04-01",
         "/2010-04-01/Accounts/AC123/Messages/SM456.json",
         "/2010-04-01/Accounts/{AccountSid}/Messages/{MessageSid}.json"),
        ("sendgrid", "https://api.sendgrid.com/v3", "/v3/templates/d-123",
         "/v3/templates/{template_id}"),
        ("slack", "https://slack.com/api", "/api/chat.postMessage", "/api/chat.postMessage"),
    ],
)  # fmt: skip
def test_documented_templates_name_real_paths(name, base_url, path, template):
    templates = presets.get(name).path_templates(base_url)
    assert parsing.template_path(path, templates) == template


@pytest.mark.parametrize("preset", CATALOG, ids=lambda p: p.name)
def test_every_preset_is_complete(preset):
    assert preset.title and preset.base_url.startswith("https://")
    assert preset.error_shapes, "errors are parsed from the provider's own shapes"
    if preset.name != "generic":
        assert preset.templates and preset.probes
    assert all(kind in RuleKind.values for kind in preset.rules)
    # A headroom rule only where the provider publishes headroom.
    assert ("rate_limit" in preset.rules) == bool(preset.rate_limit_headers)
    for probe in preset.probes:
        text = json.dumps(probe)
        # Secrets are only ever references the probe runner resolves.
        for header in ("Authorization", "x-api-key"):
            for step in probe.get("steps", [probe]):
                value = (step.get("headers") or {}).get(header)
                if value:
                    assert "${UPSTREAM_SECRET_<REF>_" in value or "{{" in value, text


def test_paubox_publishes_no_rate_limit_headers_so_no_headroom_rule():
    paubox = presets.get("paubox")
    assert paubox.rate_limit_headers == ()
    assert "rate_limit" not in paubox.rules
    assert "Token token=" in paubox.auth_schemes


def test_openpanel_signs_in_then_calls_whoami_with_the_extracted_token():
    openpanel = presets.get("openpanel")
    assert openpanel.token_lifetime_s == 900
    steps = next(p for p in openpanel.probes if "steps" in p)["steps"]
    assert steps[0]["extract"] == {"access_token": "$.access_token"}
    assert steps[1]["headers"]["Authorization"] == "Bearer {{access_token}}"


def test_the_registry_check_finds_names_it_does_not_know(monkeypatch):
    from monitoring.checks import check_presets

    assert check_presets(None) == []
    broken = presets.Preset(name="broken", title="B", base_url="https://x/", rules=("nope",),
                            webhook_scheme="carrier-pigeon")  # fmt: skip
    monkeypatch.setitem(presets.ALL, "broken", broken)
    errors = check_presets(None)
    assert {e.id for e in errors} == {"upstream.E030"}
    assert any("'nope'" in e.msg for e in errors)
    assert any("carrier-pigeon" in e.msg for e in errors)


def test_the_database_check_names_an_integration_with_an_unknown_preset(db):
    from monitoring.checks import check_integration_presets
    from monitoring.models import Integration

    Integration.objects.create(name="Old", slug="old", preset="retired-provider")
    Integration.objects.create(name="Ok", slug="ok", preset="stripe")
    warnings = check_integration_presets(None, databases=["default"])
    assert [w.id for w in warnings] == ["upstream.W030"]
    assert "retired-provider" in warnings[0].msg


def test_the_presets_command_lists_every_preset():
    out = StringIO()
    call_command("presets", stdout=out)
    for name in presets.ALL:
        assert name in out.getvalue()


def test_the_presets_command_shows_one_preset_in_full():
    out = StringIO()
    call_command("presets", "paubox", stdout=out)
    text = out.getvalue()
    assert "Token token=" in text and "none published" in text and "bulk_batch_max=50" in text
    with pytest.raises(CommandError, match="unknown preset"):
        call_command("presets", "nope")


def test_the_token_age_reaches_the_diagnosis_through_parse_error():
    body = json.dumps({"error": "Missing or invalid token"}).encode()
    openpanel = presets.get("openpanel")
    old = parsing.parse_error(body, "application/json", preset=openpanel, status=401,
                              token_age_s=20 * 60)  # fmt: skip
    fresh = parsing.parse_error(body, "application/json", preset=openpanel, status=401,
                                token_age_s=30)  # fmt: skip
    assert (old.code, old.message) == ("token_expired", "Missing or invalid token")
    assert fresh.code == "credentials_rejected"


@pytest.mark.parametrize(
    ("base_url", "prefix"),
    [
        ("https://api.paubox.net/v1/acme", "/v1/{username}"),
        ("https://api.paubox.net/v1/acme/", "/v1/{username}"),
        ("https://api.paubox.com/v1", "/v1"),  # the newer host: no username segment
        ("http://127.0.0.1:8765/paubox/v1/sandbox", "/paubox/v1/{username}"),
        ("https://proxy.example.com/", ""),
    ],
)
def test_the_template_prefix_templates_the_pattern_s_parts(base_url, prefix):
    assert presets.get("paubox").template_prefix(base_url) == prefix
