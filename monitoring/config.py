"""Configuration as code: export Upstream's configuration as a document, import one back.

The document (YAML on disk, YAML or JSON over the API) holds integrations with their probes
and webhook endpoints, channels, routes, alert rules and maintenance windows. Objects are
matched by their natural keys (an integration by slug and environment, a probe by name within
its integration, a channel, route or rule by name …), so importing the same document twice
changes nothing. Secrets appear only as ``${ENV}`` references: the models already store them
so (channels, probe headers, webhook secret references); an encrypted webhook secret is never
exported. An import validates everything first with the same forms and checks the dashboard
uses — nothing is written unless the whole document is valid — then applies the changes in one
transaction, each audited. Objects the document leaves out are kept (no deletes).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from monitoring import audit
from monitoring.models import (
    ActorType,
    AlertRule,
    Channel,
    Integration,
    MaintenanceWindow,
    Probe,
    Route,
    Severity,
)

VERSION = 1

INTEGRATION_FIELDS = (
    "name",
    "base_url",
    "owner_email",
    "expected_api_version",
    "require_https",
    "path_templates",
    "redact_names",
    "host_patterns",
    "active",
    "preset",
)
PROBE_FIELDS = (
    "kind",
    "method",
    "url",
    "headers",
    "body",
    "steps",
    "interval_s",
    "timeout_s",
    "assertions",
    "fail_threshold",
    "recover_threshold",
    "enabled",
)
WEBHOOK_FIELDS = (
    "scheme",
    "header_name",
    "signature_encoding",
    "timestamp_header",
    "replay_window_s",
    "event_types",
    "max_silence_s",
    "sample_bodies",
    "active",
)
CHANNEL_FIELDS = ("kind", "settings", "enabled")
RULE_FIELDS = (
    "kind",
    "params",
    "recipients",
    "repeat_interval_s",
    "recovery_s",
    "severity",
    "escalation_minutes",
    "enabled",
)
WINDOW_FIELDS = ("starts_at", "ends_at", "weekday", "start_time", "duration_minutes")
SECTIONS = ("integrations", "channels", "routes", "rules", "maintenance_windows")


class ConfigError(Exception):
    """The document is not valid; ``errors`` lists every problem as "where: what"."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


def _fields(model, names: tuple[str, ...]) -> tuple[str, ...]:
    # Fields another part of Upstream adds later (the preset) join when their model has them.
    have = {f.name for f in model._meta.get_fields()}
    return tuple(n for n in names if n in have)


def _value(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    return value


def _integration_key(integration: Integration | None) -> str | None:
    return f"{integration.slug}/{integration.environment}" if integration else None


# --- export ----------------------------------------------------------------------------------


def export() -> dict[str, Any]:
    """The whole configuration as a plain document (only ``${ENV}`` references for secrets)."""
    doc: dict[str, Any] = {"version": VERSION}
    integrations = []
    webhooks = _webhook_models()
    for i in Integration.objects.order_by("slug", "environment"):
        entry = {"slug": i.slug, "environment": i.environment}
        entry |= {n: _value(getattr(i, n)) for n in _fields(Integration, INTEGRATION_FIELDS)}
        entry["probes"] = [
            {"name": p.name} | {n: _value(getattr(p, n)) for n in PROBE_FIELDS}
            for p in Probe.objects.filter(integration=i).order_by("name")
        ]
        if webhooks is not None:
            entry["webhooks"] = [_export_webhook(e) for e in webhooks[0].objects.filter(
                integration=i
            ).order_by("name", "pk")]  # fmt: skip
        integrations.append(entry)
    doc["integrations"] = integrations
    doc["channels"] = [
        {"name": c.name} | {n: _value(getattr(c, n)) for n in CHANNEL_FIELDS}
        for c in Channel.objects.order_by("name")
    ]
    doc["routes"] = [
        {
            "name": r.name,
            "rule": r.rule.name if r.rule_id else None,
            "integration": _integration_key(r.integration),
            "severity": r.severity,
            "is_default": r.is_default,
            "channels": sorted(c.name for c in r.channels.all()),
        }
        for r in Route.objects.select_related("rule", "integration")
        .prefetch_related("channels")
        .order_by("name")
    ]
    doc["rules"] = [
        {"name": r.name, "integration": _integration_key(r.integration)}
        | {n: _value(getattr(r, n)) for n in RULE_FIELDS}
        | {"escalation_route": r.escalation_route.name if r.escalation_route_id else None}
        for r in AlertRule.objects.select_related("integration", "escalation_route").order_by(
            "name", "pk"
        )
    ]
    doc["maintenance_windows"] = [
        {"name": w.name, "integration": _integration_key(w.integration)}
        | {n: _value(getattr(w, n)) for n in WINDOW_FIELDS}
        for w in MaintenanceWindow.objects.select_related("integration").order_by("name", "pk")
    ]
    return doc


def _webhook_models():
    try:
        from monitoring.models import WebhookEndpoint, WebhookSecret
    except ImportError:  # pragma: no cover - webhooks are part of every install now
        return None
    return WebhookEndpoint, WebhookSecret


def _export_webhook(endpoint) -> dict:
    entry = {"name": endpoint.name} | {
        n: _value(getattr(endpoint, n)) for n in _fields(type(endpoint), WEBHOOK_FIELDS)
    }
    # Only references leave Upstream; an encrypted secret stays where it is.
    entry["secrets"] = [
        {"reference": s.reference, "not_after": _value(s.not_after)}
        for s in endpoint.secrets.order_by("created", "pk")
        if s.reference
    ]
    return entry


def dump_yaml(doc: dict) -> str:
    import yaml

    header = (
        "# Upstream configuration (python manage.py export_config). Secrets appear only as\n"
        "# ${ENV} references; import with: python manage.py import_config FILE [--dry-run]\n"
    )
    return header + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=100)


def load(text: str | bytes) -> dict:
    """Parse YAML (JSON is YAML too) into a document; ConfigError on bad syntax or shape."""
    import yaml

    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "document"
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise ConfigError([f"{where}: {problem}"]) from None
    if not isinstance(doc, dict):
        raise ConfigError(["document: must be a mapping with version and sections"])
    return doc


# --- import ----------------------------------------------------------------------------------


@dataclass
class Change:
    """One object the import creates or updates, with the fields that differ."""

    kind: str
    key: str
    action: str  # "create" | "update"
    fields: dict[str, tuple[Any, Any]] = field(default_factory=dict)

    def lines(self) -> list[str]:
        mark = "+" if self.action == "create" else "~"
        head = f"{mark} {self.kind} {self.key}"
        if self.action == "create":
            return [head]
        return [head] + [
            f"    {name}: {_show(old)} → {_show(new)}" for name, (old, new) in self.fields.items()
        ]


def _show(value: Any) -> str:
    text = json.dumps(_value(value), default=str, ensure_ascii=False)
    return text if len(text) <= 120 else text[:117] + "…"


@dataclass
class Plan:
    changes: list[Change]
    unchanged: int
    _steps: list = field(default_factory=list, repr=False)

    def diff(self) -> str:
        if not self.changes:
            return f"No changes ({self.unchanged} objects already as described)."
        lines = [line for c in self.changes for line in c.lines()]
        created = sum(c.action == "create" for c in self.changes)
        lines.append(
            f"{created} to create, {len(self.changes) - created} to update, "
            f"{self.unchanged} unchanged."
        )
        return "\n".join(lines)


class _Planner:
    """Validates a document against the database and collects what applying it would do."""

    def __init__(self, doc: dict) -> None:
        self.doc = doc
        self.errors: list[str] = []
        self.changes: list[Change] = []
        self.steps: list = []  # callables run in order inside the transaction
        self.unchanged = 0
        self.integrations: dict[str, Integration] = {
            _integration_key(i): i for i in Integration.objects.all()
        }
        self.new_integrations: set[str] = set()
        self.channels = {c.name: c for c in Channel.objects.all()}
        self.rules = {r.name: r for r in AlertRule.objects.all()}
        self.routes = {r.name: r for r in Route.objects.all()}

    # -- helpers ---------------------------------------------------------------------------

    def _list(self, where: str, value: Any) -> list:
        if value is None:
            return []
        if not isinstance(value, list):
            self.errors.append(f"{where}: must be a list")
            return []
        return value

    def _entry(self, where: str, entry: Any, known: set[str]) -> dict | None:
        if not isinstance(entry, dict):
            self.errors.append(f"{where}: must be a mapping")
            return None
        unknown = sorted(set(entry) - known)
        if unknown:
            self.errors.append(f"{where}: unknown field {', '.join(unknown)}")
            return None
        if not isinstance(entry.get("name", entry.get("slug")), str):
            self.errors.append(f"{where}: needs a name")
            return None
        return entry

    def _integration_ref(self, where: str, ref: Any) -> Integration | bool | None:
        """The integration a "slug/environment" names; False (after an error) if none."""
        if ref in (None, ""):
            return None
        if isinstance(ref, str) and ref in self.integrations:
            return self.integrations[ref]
        self.errors.append(f"{where}: no integration {ref!r} (write slug/environment)")
        return False

    def _form_errors(self, where: str, errors) -> None:
        for name, messages in errors.items():
            for message in messages:
                self.errors.append(f"{where}.{name}: {message}" if name != "__all__" else
                                   f"{where}: {message}")  # fmt: skip

    def _compare(self, obj, values: dict) -> dict[str, tuple[Any, Any]]:
        return {
            name: (getattr(obj, name), new)
            for name, new in values.items()
            if _value(getattr(obj, name)) != _value(new)
        }

    def _record(self, kind: str, key: str, obj, values: dict, save) -> None:
        """Note a create/update of obj (None: create) and queue its save."""
        if obj is None:
            self.changes.append(Change(kind, key, "create"))
            self.steps.append(save)
            return
        diff = self._compare(obj, values)
        if not diff:
            self.unchanged += 1
            return
        self.changes.append(Change(kind, key, "update", diff))
        self.steps.append(save)

    # -- sections ----------------------------------------------------------------------------

    def plan(self) -> Plan:
        doc = self.doc
        if doc.get("version", VERSION) != VERSION:
            self.errors.append(f"version: this Upstream reads version {VERSION}")
        unknown = sorted(set(doc) - {"version", *SECTIONS})
        if unknown:
            self.errors.append(f"document: unknown section {', '.join(unknown)}")
        for n, entry in enumerate(self._list("integrations", doc.get("integrations"))):
            self._integration(f"integrations[{n}]", entry)
        for n, entry in enumerate(self._list("channels", doc.get("channels"))):
            self._channel(f"channels[{n}]", entry)
        rules = self._list("rules", doc.get("rules"))
        for n, entry in enumerate(rules):
            self._rule(f"rules[{n}]", entry)
        for n, entry in enumerate(self._list("routes", doc.get("routes"))):
            self._route(f"routes[{n}]", entry)
        for n, entry in enumerate(rules):
            self._escalation(f"rules[{n}]", entry)
        for n, entry in enumerate(
            self._list("maintenance_windows", doc.get("maintenance_windows"))
        ):
            self._window(f"maintenance_windows[{n}]", entry)
        if self.errors:
            raise ConfigError(self.errors)
        return Plan(self.changes, self.unchanged, self.steps)

    def _integration(self, where: str, raw: Any) -> None:
        fields = _fields(Integration, INTEGRATION_FIELDS)
        entry = self._entry(where, raw, {"slug", "environment", *fields, "probes", "webhooks"})
        if entry is None:
            return
        key = f"{entry.get('slug')}/{entry.get('environment')}"
        existing = self.integrations.get(key)
        obj = Integration(slug=entry.get("slug"), environment=entry.get("environment"))
        if existing is not None:
            obj = Integration.objects.get(pk=existing.pk)
        values = {n: entry[n] for n in fields if n in entry}
        for name, value in values.items():
            setattr(obj, name, value)
        if not obj.name:
            obj.name = str(entry.get("slug", "")).replace("-", " ").title()
            values.setdefault("name", obj.name)
        try:
            obj.full_clean(validate_unique=existing is not None)
        except ValidationError as exc:
            self._form_errors(where, exc.message_dict)
            return
        if existing is None:
            self.new_integrations.add(key)
            self.integrations[key] = obj

        def save(obj=obj, existing=existing):
            before = None if existing is None else audit.snapshot(existing)
            obj.save()
            return obj, before

        self._record("integration", key, existing, values, save)
        for n, probe in enumerate(self._list(f"{where}.probes", entry.get("probes"))):
            self._probe(f"{where}.probes[{n}]", key, obj, existing, probe)
        if "webhooks" in entry:
            for n, hook in enumerate(self._list(f"{where}.webhooks", entry.get("webhooks"))):
                self._webhook(f"{where}.webhooks[{n}]", key, obj, existing, hook)

    def _probe(self, where: str, ikey: str, integration, existing_integration, raw: Any) -> None:
        from monitoring.formfields import BoundedJSONField  # noqa: F401 - the form's fields
        from monitoring.probes.forms import ProbeForm

        entry = self._entry(where, raw, {"name", *PROBE_FIELDS})
        if entry is None:
            return
        existing = None
        if existing_integration is not None:
            existing = Probe.objects.filter(
                integration=existing_integration, name=entry["name"]
            ).first()
        data = _form_data(ProbeForm, existing, {"name": entry["name"], **entry})
        data.pop("integration", None)
        # The form writes into its instance: give it a copy, so `existing` stays as stored.
        instance = Probe.objects.get(pk=existing.pk) if existing is not None else Probe()
        form = ProbeForm(data=data, instance=instance)
        form.fields.pop("integration", None)
        if not form.is_valid():
            self._form_errors(where, form.errors)
            return
        values = {n: form.cleaned_data[n] for n in PROBE_FIELDS if n in entry}

        def save(form=form):
            before = None if form.instance.pk is None else audit.snapshot(
                Probe.objects.get(pk=form.instance.pk)
            )  # fmt: skip
            probe = form.save(commit=False)
            probe.integration = Integration.objects.get(
                slug=integration.slug, environment=integration.environment
            )
            probe.save()
            return probe, before

        self._record("probe", f"{ikey} {entry['name']!r}", existing, values, save)

    def _webhook(self, where: str, ikey: str, integration, existing_integration, raw: Any) -> None:
        models_ = _webhook_models()
        if models_ is None:
            return
        WebhookEndpoint, WebhookSecret = models_
        fields = _fields(WebhookEndpoint, WEBHOOK_FIELDS)
        entry = self._entry(where, raw, {"name", *fields, "secrets"})
        if entry is None:
            return
        existing = None
        if existing_integration is not None:
            existing = WebhookEndpoint.objects.filter(
                integration=existing_integration, name=entry["name"]
            ).first()
        obj = WebhookEndpoint.objects.get(pk=existing.pk) if existing else WebhookEndpoint()
        obj.name = entry["name"]
        values = {n: entry[n] for n in fields if n in entry}
        for name, value in values.items():
            setattr(obj, name, value)
        try:
            obj.full_clean(exclude=["integration"])
        except ValidationError as exc:
            self._form_errors(where, exc.message_dict)
            return
        wanted = []
        for n, secret in enumerate(self._list(f"{where}.secrets", entry.get("secrets"))):
            if not isinstance(secret, dict) or not isinstance(secret.get("reference"), str):
                self.errors.append(f"{where}.secrets[{n}]: give reference: ${{ENV_NAME}}")
                continue
            row = WebhookSecret(reference=secret["reference"], not_after=secret.get("not_after"))
            try:
                row.full_clean(exclude=["endpoint"])
            except ValidationError as exc:
                self._form_errors(f"{where}.secrets[{n}]", exc.message_dict)
                continue
            wanted.append((secret["reference"], row.not_after))
        have = []
        if existing is not None:
            have = [
                (s.reference, s.not_after)
                for s in existing.secrets.exclude(reference="").order_by("created", "pk")
            ]
        if "secrets" in entry and sorted(map(str, have)) != sorted(map(str, wanted)):
            values["secrets"] = wanted
        secrets_changed = "secrets" in values

        def save(obj=obj, wanted=wanted, secrets_changed=secrets_changed, existing=existing):
            before = None if existing is None else audit.snapshot(existing)
            obj.integration = Integration.objects.get(
                slug=integration.slug, environment=integration.environment
            )
            obj.save()
            if secrets_changed:
                known = {(s.reference, s.not_after): s for s in obj.secrets.exclude(reference="")}
                for pair in wanted:
                    if pair not in known:
                        WebhookSecret.objects.create(
                            endpoint=obj, reference=pair[0], not_after=pair[1]
                        )
                for pair, s in known.items():
                    if pair not in wanted:
                        s.delete()
            return obj, before

        if existing is not None and secrets_changed:
            values_for_diff = dict(values)
            values_for_diff.pop("secrets")
            diff = self._compare(existing, values_for_diff)
            diff["secrets"] = (have, wanted)
            self.changes.append(Change("webhook", f"{ikey} {entry['name']!r}", "update", diff))
            self.steps.append(save)
            return
        values.pop("secrets", None)
        self._record("webhook", f"{ikey} {entry['name']!r}", existing, values, save)

    def _channel(self, where: str, raw: Any) -> None:
        from monitoring.alerts.channels import validate_settings

        entry = self._entry(where, raw, {"name", *CHANNEL_FIELDS})
        if entry is None:
            return
        existing = self.channels.get(entry["name"])
        obj = Channel.objects.get(pk=existing.pk) if existing else Channel(name=entry["name"])
        values = {n: entry[n] for n in CHANNEL_FIELDS if n in entry}
        for name, value in values.items():
            setattr(obj, name, value)
        try:
            obj.full_clean(validate_unique=existing is None)
            validate_settings(obj.kind, obj.settings)
        except ValidationError as exc:
            self._form_errors(where, exc.message_dict)
            return
        except ValueError as exc:
            self.errors.append(f"{where}.settings: {exc}")
            return
        self.channels[obj.name] = obj

        def save(obj=obj, existing=existing):
            before = None if existing is None else audit.snapshot(existing)
            obj.save()
            return obj, before

        self._record("channel", repr(obj.name), existing, values, save)

    def _rule(self, where: str, raw: Any) -> None:
        from monitoring.alerts.forms import AlertRuleForm

        entry = self._entry(where, raw, {"name", "integration", *RULE_FIELDS, "escalation_route"})
        if entry is None:
            return
        integration = self._integration_ref(f"{where}.integration", entry.get("integration"))
        if integration is False:
            return
        existing = self.rules.get(entry["name"])
        data = _form_data(AlertRuleForm, existing, entry)
        data["integration"] = ""
        instance = AlertRule.objects.get(pk=existing.pk) if existing is not None else AlertRule()
        form = AlertRuleForm(data=data, instance=instance)
        form.fields["integration"].required = False
        if not form.is_valid() and set(form.errors) - {"integration"}:
            self._form_errors(where, {k: v for k, v in form.errors.items() if k != "integration"})
            return
        cls_scope = _scope_error(form.cleaned_data.get("kind"), integration)
        if cls_scope:
            self.errors.append(f"{where}.integration: {cls_scope}")
            return
        extra = {n: entry[n] for n in ("severity", "escalation_minutes") if n in entry}
        if "severity" in extra and extra["severity"] not in Severity.values:
            self.errors.append(f"{where}.severity: one of {', '.join(Severity.values)}")
            return
        minutes = extra.get("escalation_minutes")
        if minutes is not None and (not isinstance(minutes, int) or minutes < 1):
            self.errors.append(f"{where}.escalation_minutes: a whole number of minutes, or null")
            return
        values = {
            n: form.cleaned_data[n] for n in RULE_FIELDS if n in entry and n in form.cleaned_data
        }
        values |= extra
        values["integration"] = integration
        if existing is None:
            values.pop("integration")

        def save(form=form, integration=integration, extra=extra, existing=existing):
            before = None if existing is None else audit.snapshot(existing)
            rule = form.save(commit=False)
            rule.integration = (
                None
                if integration is None
                else Integration.objects.get(
                    slug=integration.slug, environment=integration.environment
                )
            )
            for name, value in extra.items():
                setattr(rule, name, value)
            rule.save()
            return rule, before

        self._record("rule", repr(entry["name"]), existing, values, save)
        self.rules.setdefault(entry["name"], form.instance)

    def _route(self, where: str, raw: Any) -> None:
        entry = self._entry(where, raw, {"name", "rule", "integration", "severity", "is_default",
                                         "channels"})  # fmt: skip
        if entry is None:
            return
        integration = self._integration_ref(f"{where}.integration", entry.get("integration"))
        if integration is False:
            return
        rule_name = entry.get("rule")
        if rule_name not in (None, "") and rule_name not in self.rules:
            self.errors.append(f"{where}.rule: no rule named {rule_name!r}")
            return
        channel_names = self._list(f"{where}.channels", entry.get("channels"))
        missing = [c for c in channel_names if c not in self.channels]
        if missing:
            self.errors.append(
                f"{where}.channels: no channel named {', '.join(map(repr, missing))}"
            )
            return
        existing = self.routes.get(entry["name"])
        obj = Route.objects.get(pk=existing.pk) if existing else Route(name=entry["name"])
        obj.severity = entry.get("severity") or ""
        obj.is_default = bool(entry.get("is_default", False))
        obj.integration_id = integration.pk if integration else None
        rule = self.rules.get(rule_name) if rule_name else None
        obj.rule_id = rule.pk if rule is not None else None
        try:
            obj.clean_fields(exclude=["rule", "integration"])
            if not (rule is not None and rule.pk is None) and not (
                integration is not None and integration.pk is None
            ):
                obj.clean()
        except ValidationError as exc:
            self._form_errors(where, exc.message_dict)
            return
        values = {"severity": obj.severity, "is_default": obj.is_default}
        current = {}
        if existing is not None:
            current = {
                "rule": existing.rule.name if existing.rule_id else None,
                "integration": _integration_key(existing.integration),
                "channels": sorted(c.name for c in existing.channels.all()),
            }
        wanted = {
            "rule": rule_name or None,
            "integration": entry.get("integration") or None,
            "channels": sorted(channel_names),
        }

        def save(obj=obj, existing=existing, wanted=wanted):
            before = None if existing is None else audit.snapshot(existing)
            obj.rule = AlertRule.objects.get(name=wanted["rule"]) if wanted["rule"] else None
            obj.integration = _lookup(wanted["integration"]) if wanted["integration"] else None
            obj.save()
            obj.channels.set(Channel.objects.filter(name__in=wanted["channels"]))
            return obj, before

        self.routes[entry["name"]] = obj
        if existing is None:
            self._record("route", repr(entry["name"]), None, values, save)
            return
        diff = self._compare(existing, values)
        diff |= {k: (current[k], wanted[k]) for k in wanted if current[k] != wanted[k]}
        if not diff:
            self.unchanged += 1
            return
        self.changes.append(Change("route", repr(entry["name"]), "update", diff))
        self.steps.append(save)

    def _escalation(self, where: str, raw: Any) -> None:
        if not isinstance(raw, dict) or "escalation_route" not in raw:
            return
        name = raw.get("escalation_route")
        if name not in (None, "") and name not in self.routes:
            self.errors.append(f"{where}.escalation_route: no route named {name!r}")
            return
        rule = self.rules.get(raw.get("name"))
        current = None
        if rule is not None and rule.pk is not None and rule.escalation_route_id:
            current = Route.objects.filter(pk=rule.escalation_route_id).values_list(
                "name", flat=True
            ).first()  # fmt: skip
        wanted = name or None
        if current == wanted:
            return

        rule_name = raw.get("name")

        def save(rule_name=rule_name, wanted=wanted):
            rule = AlertRule.objects.get(name=rule_name)
            before = audit.snapshot(rule)
            rule.escalation_route = Route.objects.get(name=wanted) if wanted else None
            rule.save(update_fields=["escalation_route"])
            return rule, before

        existing_change = next(
            (c for c in self.changes if c.kind == "rule" and c.key == repr(raw.get("name"))), None
        )
        if existing_change is not None and existing_change.action == "update":
            existing_change.fields["escalation_route"] = (current, wanted)
        elif existing_change is None:
            self.changes.append(
                Change(
                    "rule", repr(raw.get("name")), "update", {"escalation_route": (current, wanted)}
                )
            )
        self.steps.append(save)

    def _window(self, where: str, raw: Any) -> None:
        entry = self._entry(where, raw, {"name", "integration", *WINDOW_FIELDS})
        if entry is None:
            return
        integration = self._integration_ref(f"{where}.integration", entry.get("integration"))
        if integration is False:
            return
        existing = (
            MaintenanceWindow.objects.filter(
                name=entry["name"],
                integration=integration if integration and integration.pk else None,
            ).first()
            if integration is None or integration.pk
            else None
        )
        obj = MaintenanceWindow.objects.get(pk=existing.pk) if existing else MaintenanceWindow()
        obj.name = entry["name"]
        values = {n: entry[n] for n in WINDOW_FIELDS if n in entry}
        for name, value in values.items():
            setattr(obj, name, value)
        try:
            obj.full_clean(exclude=["integration"])
        except ValidationError as exc:
            self._form_errors(where, exc.message_dict)
            return
        values = {n: getattr(obj, n) for n in values}
        ikey = entry.get("integration")

        def save(obj=obj, existing=existing, ikey=ikey):
            before = None if existing is None else audit.snapshot(existing)
            obj.integration = _lookup(ikey) if ikey else None
            obj.save()
            return obj, before

        self._record("maintenance window", repr(entry["name"]), existing, values, save)


def _lookup(key: str) -> Integration:
    slug, _, environment = key.partition("/")
    return Integration.objects.get(slug=slug, environment=environment)


def _scope_error(kind: str | None, integration) -> str:
    from monitoring.alerts.rules import KINDS

    cls = KINDS.get(kind)
    if cls is None or integration is None:
        return ""
    return cls.scope_error(integration) if integration.pk else ""


def _form_data(form_class, instance, entry: dict) -> dict:
    """A form's POST data: the instance's current values, overlaid with the document's."""
    data: dict[str, Any] = {}
    form = form_class(instance=instance) if instance is not None else form_class()
    for name, bound in form.fields.items():
        if instance is not None:
            data[name] = form.initial.get(name)
        elif bound.initial is not None:
            # A model default shows as the field's initial, sometimes a callable (dict, now).
            data[name] = bound.initial() if callable(bound.initial) else bound.initial
    for name, value in entry.items():
        if name in form.fields:
            data[name] = value
    out = {}
    for name, value in data.items():
        if value is None:
            continue
        field_ = form.fields.get(name)
        if field_ is not None and type(field_).__name__.endswith("JSONField"):
            out[name] = json.dumps(value)
        elif isinstance(value, bool):
            if value:
                out[name] = "on"
        else:
            out[name] = value
    return out


def plan(doc: dict) -> Plan:
    """Validate the document; the changes applying it would make (ConfigError if invalid)."""
    return _Planner(doc).plan()


def apply(doc: dict, *, actor: str, actor_type: str = ActorType.SYSTEM, user=None) -> Plan:
    """Validate and apply the document in one transaction, auditing every change."""
    with transaction.atomic():
        result = plan(doc)
        for step in result._steps:
            obj, before = step()
            after = audit.snapshot(obj)
            if before is None:
                action, before_values, after_values = audit.Actions.CREATE, None, after
            else:
                changed = sorted(k for k in after if before.get(k) != after.get(k))
                if not changed:
                    continue
                action = audit.Actions.UPDATE
                before_values = {k: before.get(k) for k in changed}
                after_values = {k: after[k] for k in changed}
            audit.record(
                action,
                user=user,
                actor=actor,
                actor_type=actor_type,
                target=obj,
                before=before_values,
                after=after_values,
            )
    return result
