"""The preset catalog: the three seed systems and the providers most products call.

Facts come from each provider's public API reference. Where a provider publishes no
rate-limit headers the tuple is empty (only 429s are counted and no headroom rule is
offered); where its webhooks use a scheme Upstream does not verify yet, ``webhook_scheme``
is empty and ``webhook_note`` says what the provider sends. ``<REF>`` in a probe is replaced
by the integration's secret-name stem (``PAUBOX``, ``PAUBOX_STAGING``) when it is applied.
"""

from __future__ import annotations

from monitoring.presets import API_DISABLED, TOKEN_EXPIRED, ErrorShape, Preset

# The error shape of RFC 6749 (OAuth) and of many JSON APIs: {"error": {"code", "message"}}.
_NESTED = ErrorShape(code=("error.code", "error.type"), message=("error.message",))
_COMMON_RULES = ("error_rate", "latency", "auth_spike", "probe_down", "traffic_stopped")

GENERIC = Preset(
    name="generic",
    title="Generic platform guide",
    base_url="https://<host>/",
    error_shapes=(ErrorShape(code=("error.code",), message=("error.message", "error.details")),),
    diagnoses=(TOKEN_EXPIRED,),
    rate_limit_headers=("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"),
    pagination="cursor (next link or next_cursor)",
    webhook_scheme="hmac_sha256",
    rules=(*_COMMON_RULES, "rate_limit"),
    docs="A generic platform integration guide: nested errors, X-RateLimit-* headers, "
    "webhooks signed with a shared secret.",
)

OPENPANEL = Preset(
    name="openpanel",
    title="OpenPanel OpenAdmin API",
    base_url="https://<host>:2087/api/",
    error_shapes=(ErrorShape(message=("error",)), ErrorShape(message=("message",))),
    # Some endpoints answer 200 {"error": "…"}; success bodies never carry a top-level
    # "error" (they say {"message": …} or {"success": true, …}).
    success_errors=(ErrorShape(message=("error",)),),
    # "API access is disabled!" answers every route when the API is off: its own verdict.
    diagnoses=(API_DISABLED, TOKEN_EXPIRED),
    templates=(
        "/users",
        "/users/{username}",
        "/users/{username}/suspend",
        "/users/{username}/unsuspend",
        "/plans",
        "/plans/{plan_id}",
        "/notifications",
        "/notifications/{line_number}",
        "/domains",
        "/domains/{domain}",
        "/services",
        "/services/{service}",
        "/backups",
        "/backups/{backup_id}",
        "/whoami",
    ),
    pagination="none (full lists)",
    probes=(
        {
            "name": "API up",
            "method": "GET",
            "path": "",
            "assertions": {"status": "200", "json_path": ['$.message == "API is working!"']},
        },
        {
            "name": "Sign in and whoami",
            "steps": [
                {
                    "name": "sign in",
                    "method": "POST",
                    "path": "",
                    "body": {
                        "username": "${UPSTREAM_SECRET_<REF>_USER}",
                        "password": "${UPSTREAM_SECRET_<REF>_PASSWORD}",
                    },
                    "extract": {"access_token": "$.access_token"},
                    "assertions": {"status": "200"},
                    "lifetime_s": 15 * 60,
                },
                {
                    "name": "whoami",
                    "method": "GET",
                    "path": "whoami",
                    "headers": {"Authorization": "Bearer {{access_token}}"},
                    "assertions": {"status": "200", "json_path": ["$.logged_in_as exists"]},
                },
            ],
        },
    ),
    token_lifetime_s=15 * 60,
    limits={"sign_ins_per_minute": 5, "token_lifetime_min": 15},
    rules=_COMMON_RULES,
    docs="Enterprise edition. JWT from POST /api/ (15 minutes, no refresh; 5 sign-ins a "
    "minute per IP). GET /api/users is empty for bearer callers.",
)

PAUBOX = Preset(
    name="paubox",
    title="Paubox Email API",
    base_url="https://api.paubox.net/v1/<username>",
    hosts=("api.paubox.net", "api.paubox.com"),
    auth_schemes=("Token token=", "Bearer"),
    error_shapes=(
        ErrorShape(code=("errors.0.code",), message=("errors.0.title", "errors.0.details")),
        ErrorShape(code=("code",), message=("message",)),
        ErrorShape(message=("error",)),
    ),
    diagnoses=(TOKEN_EXPIRED,),
    templates=(
        "/messages",
        "/bulk_messages",
        "/message_receipt",
        "/dynamic_templates",
        "/dynamic_templates/{id}",
        "/templated_messages",
    ),
    pagination="none",
    probes=(
        {
            "name": "Dynamic templates",
            "method": "GET",
            "path": "dynamic_templates",
            "headers": {"Authorization": "Token token=${UPSTREAM_SECRET_<REF>_API_KEY}"},
            "assertions": {"status": "200"},
        },
    ),
    status_page="https://status.paubox.com",
    # POST /bulk_messages: at most 50 messages per batch advised; the caller's SDK counts
    # them (upstream_client.bodies) and a bigger batch is flagged on its row.
    limits={"bulk_batch_max": 50},
    rules=_COMMON_RULES,
    docs="Both official SDKs send Authorization: Token token=<key>. GET /dynamic_templates "
    "sends no e-mail. No rate-limit headers are published.",
)

STRIPE = Preset(
    name="stripe",
    title="Stripe",
    base_url="https://api.stripe.com/",
    hosts=("api.stripe.com", "files.stripe.com"),
    token_formats=("sk_live_", "sk_test_", "rk_live_", "rk_test_"),
    error_shapes=(
        ErrorShape(
            code=("error.decline_code", "error.code", "error.type"), message=("error.message",)
        ),
    ),
    version_header="Stripe-Version",
    api_version="2025-03-31.basil",
    templates=(
        "/v1/balance",
        "/v1/customers",
        "/v1/customers/{customer}",
        "/v1/charges",
        "/v1/charges/{charge}",
        "/v1/payment_intents",
        "/v1/payment_intents/{intent}",
        "/v1/payment_intents/{intent}/confirm",
        "/v1/payment_intents/{intent}/capture",
        "/v1/refunds",
        "/v1/refunds/{refund}",
        "/v1/invoices/{invoice}",
        "/v1/subscriptions/{subscription}",
        "/v1/events/{event}",
        "/v1/checkout/sessions/{session}",
    ),
    pagination="cursor: starting_after / ending_before, has_more",
    probes=(
        {
            "name": "Balance",
            "method": "GET",
            "path": "v1/balance",
            "headers": {"Authorization": "Bearer ${UPSTREAM_SECRET_<REF>_API_KEY}"},
            "assertions": {"status": "200", "header": {"name": "Request-Id"}},
        },
    ),
    status_page="https://status.stripe.com",
    webhook_scheme="stripe",
    limits={"read_per_second_live": 100, "write_per_second_live": 100},
    rules=(*_COMMON_RULES, "version_drift", "deprecation"),
    docs="Errors {error:{type,code,decline_code,message,param}}; no rate-limit headers; "
    "Idempotency-Key on POSTs.",
)

GITHUB = Preset(
    name="github",
    title="GitHub REST API",
    base_url="https://api.github.com/",
    hosts=("api.github.com",),
    auth_schemes=("Bearer", "token"),
    token_formats=("ghp_", "github_pat_", "gho_", "ghu_", "ghs_", "ghr_"),
    error_shapes=(ErrorShape(code=("errors.0.code", "status"), message=("message",)),),
    rate_limit_headers=(
        "X-RateLimit-Limit",
        "X-RateLimit-Remaining",
        "X-RateLimit-Reset",
        "X-RateLimit-Used",
        "X-RateLimit-Resource",
    ),
    version_header="X-GitHub-Api-Version",
    api_version="2022-11-28",
    templates=(
        "/user",
        "/rate_limit",
        "/repos/{owner}/{repo}",
        "/repos/{owner}/{repo}/issues",
        "/repos/{owner}/{repo}/issues/{issue_number}",
        "/repos/{owner}/{repo}/issues/{issue_number}/comments",
        "/repos/{owner}/{repo}/pulls",
        "/repos/{owner}/{repo}/pulls/{pull_number}",
        "/repos/{owner}/{repo}/commits/{ref}",
        "/repos/{owner}/{repo}/contents/{path}",
        "/repos/{owner}/{repo}/actions/runs/{run_id}",
        "/orgs/{org}",
        "/orgs/{org}/repos",
        "/users/{username}",
    ),
    pagination="Link header: rel=next, per_page up to 100",
    probes=(
        {
            "name": "Rate limit",
            "method": "GET",
            "path": "rate_limit",
            "headers": {
                "Authorization": "Bearer ${UPSTREAM_SECRET_<REF>_TOKEN}",
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": "2022-11-28",
            },
            "assertions": {"status": "200", "json_path": ["$.resources exists"]},
        },
    ),
    status_page="https://www.githubstatus.com",
    statuspage_json=True,
    webhook_scheme="github",
    limits={"requests_per_hour_token": 5000, "requests_per_hour_anonymous": 60},
    rules=(*_COMMON_RULES, "rate_limit", "version_drift", "deprecation"),
    docs="GET /rate_limit does not count against the limit. Errors {message, "
    "documentation_url, errors[]}.",
)

OPENAI = Preset(
    name="openai",
    title="OpenAI API",
    base_url="https://api.openai.com/v1",
    hosts=("api.openai.com",),
    token_formats=("sk-", "sk-proj-", "sk-svcacct-", "sk-admin-"),
    error_shapes=(_NESTED,),
    rate_limit_headers=(
        "x-ratelimit-limit-requests",
        "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-requests",
        "x-ratelimit-limit-tokens",
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-reset-tokens",
    ),
    version_header="openai-version",
    templates=(
        "/models",
        "/models/{model}",
        "/chat/completions",
        "/chat/completions/{completion_id}",
        "/responses",
        "/responses/{response_id}",
        "/embeddings",
        "/files",
        "/files/{file_id}",
        "/batches",
        "/batches/{batch_id}",
        "/audio/transcriptions",
        "/images/generations",
        "/moderations",
    ),
    pagination="cursor: after / limit, has_more",
    probes=(
        {
            "name": "Models",
            "method": "GET",
            "path": "models",
            "headers": {"Authorization": "Bearer ${UPSTREAM_SECRET_<REF>_API_KEY}"},
            "assertions": {"status": "200", "json_path": ['$.object == "list"']},
        },
    ),
    status_page="https://status.openai.com",
    webhook_scheme="standard",
    rules=(*_COMMON_RULES, "rate_limit"),
    docs="Errors {error:{message,type,param,code}}; reset headers are durations (6m0s).",
)

ANTHROPIC = Preset(
    name="anthropic",
    title="Anthropic API",
    base_url="https://api.anthropic.com/v1",
    hosts=("api.anthropic.com",),
    auth_header="x-api-key",
    auth_schemes=("",),
    token_formats=("sk-ant-",),
    redact_names=("x-api-key",),
    error_shapes=(ErrorShape(code=("error.type",), message=("error.message",)),),
    rate_limit_headers=(
        "anthropic-ratelimit-requests-limit",
        "anthropic-ratelimit-requests-remaining",
        "anthropic-ratelimit-requests-reset",
        "anthropic-ratelimit-tokens-limit",
        "anthropic-ratelimit-tokens-remaining",
        "anthropic-ratelimit-tokens-reset",
        "anthropic-ratelimit-input-tokens-remaining",
        "anthropic-ratelimit-output-tokens-remaining",
    ),
    version_header="anthropic-version",
    api_version="2023-06-01",
    templates=(
        "/messages",
        "/messages/count_tokens",
        "/messages/batches",
        "/messages/batches/{batch_id}",
        "/messages/batches/{batch_id}/results",
        "/models",
        "/models/{model_id}",
        "/files",
        "/files/{file_id}",
    ),
    pagination="cursor: after_id / before_id, has_more",
    probes=(
        {
            "name": "Models",
            "method": "GET",
            "path": "models",
            "headers": {
                "x-api-key": "${UPSTREAM_SECRET_<REF>_API_KEY}",
                "anthropic-version": "2023-06-01",
            },
            "assertions": {"status": "200", "json_path": ["$.data exists"]},
        },
    ),
    status_page="https://status.anthropic.com",
    statuspage_json=True,
    webhook_note="No webhooks.",
    limits={"overloaded_status": 529},
    rules=(*_COMMON_RULES, "rate_limit"),
    docs="Errors {type:'error', error:{type,message}}; 529 means overloaded. Every request "
    "sends anthropic-version.",
)

TWILIO = Preset(
    name="twilio",
    title="Twilio REST API",
    base_url="https://api.twilio.com/2010-04-01",
    hosts=("api.twilio.com", "*.twilio.com"),
    auth_schemes=("Basic",),
    token_formats=("AC (account SID) : auth token", "SK (API key SID) : secret"),
    error_shapes=(ErrorShape(code=("code",), message=("message", "more_info")),),
    templates=(
        "/Accounts.json",
        "/Accounts/{AccountSid}.json",
        "/Accounts/{AccountSid}/Messages.json",
        "/Accounts/{AccountSid}/Messages/{MessageSid}.json",
        "/Accounts/{AccountSid}/Calls.json",
        "/Accounts/{AccountSid}/Calls/{CallSid}.json",
        "/Accounts/{AccountSid}/IncomingPhoneNumbers.json",
        "/Accounts/{AccountSid}/Recordings/{RecordingSid}.json",
        "/Accounts/{AccountSid}/Usage/Records.json",
    ),
    pagination="next_page_uri / PageSize, PageToken",
    probes=(
        {
            "name": "Accounts",
            "method": "GET",
            "path": "Accounts.json",
            # base64 of "<account SID>:<auth token>", as HTTP Basic sends it.
            "headers": {"Authorization": "Basic ${UPSTREAM_SECRET_<REF>_BASIC_AUTH}"},
            "assertions": {"status": "200", "json_path": ["$.accounts exists"]},
        },
    ),
    status_page="https://status.twilio.com",
    statuspage_json=True,
    webhook_note="Twilio signs with HMAC-SHA1 over the URL and form parameters "
    "(X-Twilio-Signature); not verified by Upstream yet.",
    limits={"error_code_too_many_requests": 20429},
    rules=_COMMON_RULES,
    docs="HTTP Basic with the account SID and auth token; errors {code,message,more_info,"
    "status}; no rate-limit headers. The API version is in the path.",
)

SENDGRID = Preset(
    name="sendgrid",
    title="SendGrid v3 API",
    base_url="https://api.sendgrid.com/v3",
    hosts=("api.sendgrid.com",),
    token_formats=("SG.",),
    error_shapes=(
        ErrorShape(code=("errors.0.field",), message=("errors.0.message",)),
        ErrorShape(message=("error",)),
    ),
    rate_limit_headers=("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"),
    templates=(
        "/mail/send",
        "/scopes",
        "/templates",
        "/templates/{template_id}",
        "/templates/{template_id}/versions/{version_id}",
        "/marketing/contacts",
        "/suppression/bounces",
        "/suppression/bounces/{email}",
        "/messages",
        "/messages/{msg_id}",
        "/stats",
    ),
    pagination="limit / offset (page_size, page_token on newer endpoints)",
    probes=(
        {
            "name": "Scopes",
            "method": "GET",
            "path": "scopes",
            "headers": {"Authorization": "Bearer ${UPSTREAM_SECRET_<REF>_API_KEY}"},
            "assertions": {"status": "200", "json_path": ["$.scopes exists"]},
        },
    ),
    status_page="https://status.sendgrid.com",
    statuspage_json=True,
    webhook_note="The Event Webhook is signed with ECDSA (X-Twilio-Email-Event-Webhook-"
    "Signature); not verified by Upstream yet.",
    limits={"mail_send_recipients_max": 1000},
    rules=(*_COMMON_RULES, "rate_limit"),
    docs="Errors {errors:[{message,field,help}]}; POST /mail/send answers 202.",
)

SLACK = Preset(
    name="slack",
    title="Slack Web API",
    base_url="https://slack.com/api",
    hosts=("slack.com", "*.slack.com"),
    token_formats=("xoxb-", "xoxp-", "xapp-", "xoxe-"),
    # Legacy callers pass the token as a form or query field named "token".
    redact_names=("token",),
    # Slack answers HTTP 200 with {"ok": false, "error": "channel_not_found"}.
    error_shapes=(
        ErrorShape(code=("error",), message=("warning", "response_metadata.messages.0")),
    ),
    success_errors=(
        ErrorShape(
            code=("error",),
            message=("warning", "response_metadata.messages.0"),
            where=(("ok", False),),
        ),
    ),
    diagnoses=(TOKEN_EXPIRED,),
    rate_limit_headers=(),  # a 429 carries Retry-After; no headroom is published
    templates=(
        "/auth.test",
        "/chat.postMessage",
        "/chat.update",
        "/conversations.list",
        "/conversations.history",
        "/conversations.info",
        "/users.list",
        "/users.info",
        "/files.upload",
    ),
    pagination="cursor: response_metadata.next_cursor",
    probes=(
        {
            "name": "auth.test",
            "method": "POST",
            "path": "auth.test",
            "headers": {"Authorization": "Bearer ${UPSTREAM_SECRET_<REF>_BOT_TOKEN}"},
            "assertions": {"status": "200", "json_path": ["$.ok == true"]},
        },
    ),
    status_page="https://slack-status.com",
    webhook_note="Slack signs with HMAC-SHA256 over v0:timestamp:body (X-Slack-Signature); "
    "not verified by Upstream yet.",
    limits={"chat_post_message_per_second_per_channel": 1},
    rules=_COMMON_RULES,
    docs="Errors come as HTTP 200 with ok=false; 429 carries Retry-After, no headroom headers.",
)

CATALOG = (GENERIC, OPENPANEL, PAUBOX, STRIPE, GITHUB, OPENAI, ANTHROPIC, TWILIO, SENDGRID, SLACK)
