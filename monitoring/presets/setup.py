"""Turn a preset into an integration with its probes and rules: plan the change, then apply it.

The one creation path for ``manage.py add_integration``, the admin's preset choice and the
demo. ``plan()`` reads only; ``apply()`` writes the plan in one transaction and audits each
object it creates or changes. Applying a plan a second time finds nothing to change.
Secrets are never values here: probes name them as ``${UPSTREAM_SECRET_…}`` references.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.db import transaction

from monitoring import audit
from monitoring.attempts import is_loopback
from monitoring.models import (
    ActorType,
    AlertRule,
    Environment,
    Integration,
    Probe,
    ProbeKind,
    RuleKind,
)
from monitoring.presets import Preset

PROBE_INTERVAL_S = 60
STATUSPAGE_INTERVAL_S = 300
STATUSPAGE_PROBE = "Status page"


class PresetError(ValueError):
    """The preset cannot be applied as asked (unknown environment, a base URL to fill in …)."""


@dataclass
class Change:
    """One object the plan creates or updates; ``fields`` maps a name to (old, new)."""

    model: str  # "integration", "probe", "rule"
    name: str
    created: bool
    fields: dict[str, tuple[Any, Any]]

    def lines(self) -> list[str]:
        verb = "create" if self.created else "update"
        out = [f"{verb} {self.model} {self.name!r}"]
        for key, (old, new) in self.fields.items():
            out.append(
                f"    {key}: {_shown(new)}"
                if self.created
                else f"    {key}: {_shown(old)} → {_shown(new)}"
            )
        return out


def _shown(value: Any) -> str:
    text = repr(value) if not isinstance(value, str) else repr(value.replace("\n", " | "))
    return text if len(text) <= 160 else text[:157] + "…"


@dataclass
class Plan:
    """What applying a preset would do; empty ``changes`` means nothing to do."""

    preset: Preset
    integration: Integration  # unsaved when it is to be created
    integration_fields: dict[str, Any]
    probes: list[dict[str, Any]] = field(default_factory=list)
    rules: list[dict[str, Any]] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [line for change in self.changes for line in change.lines()]


def secret_stem(slug: str, environment: str) -> str:
    """The middle of a secret's variable name: ``PAUBOX``, ``PAUBOX_STAGING``."""
    stem = re.sub(r"[^A-Z0-9]+", "_", slug.upper()).strip("_") or "INTEGRATION"
    if environment != Environment.PRODUCTION:
        stem += "_" + re.sub(r"[^A-Z0-9]+", "_", environment.upper())
    return stem


def _fill_refs(value: Any, stem: str) -> Any:
    if isinstance(value, str):
        return value.replace("<REF>", stem)
    if isinstance(value, list | tuple):
        return [_fill_refs(v, stem) for v in value]
    if isinstance(value, dict):
        return {k: _fill_refs(v, stem) for k, v in value.items()}
    return value


def _join(base_url: str, path: str) -> str:
    return base_url.rstrip("/") + "/" + path.lstrip("/") if path else base_url


def _lines(text: str) -> list[str]:
    return [line.strip() for line in re.split(r"[,\n]", text) if line.strip()]


def _merged(existing: str, wanted: list[str], sep: str) -> str:
    """The existing entries, then the wanted ones not among them: user edits are kept."""
    have = _lines(existing)
    return sep.join(have + [w for w in wanted if w not in have])


def _host_patterns(preset: Preset, host: str) -> list[str]:
    def claims(pattern: str) -> bool:
        return host == pattern or (pattern.startswith("*.") and host.endswith(pattern[1:]))

    if any(claims(p) for p in preset.hosts):
        return list(preset.hosts)
    if not host or is_loopback(host):
        return []  # a sandbox: spans to loopback belong to no provider
    return [host]


def probe_specs(preset: Preset, base_url: str, stem: str) -> list[dict[str, Any]]:
    """The preset's probes as Probe field dicts for an integration at ``base_url``."""
    specs = []
    for raw in preset.probes:
        probe = _fill_refs(dict(raw), stem)
        fields: dict[str, Any] = {
            "name": probe["name"][:100],
            "kind": ProbeKind.HTTP,
            "interval_s": PROBE_INTERVAL_S,
            "timeout_s": 10.0,
        }
        if probe.get("steps"):
            steps = []
            for step in probe["steps"]:
                step = dict(step)
                step["url"] = _join(base_url, step.pop("path", ""))
                steps.append(step)
            fields |= {"method": "GET", "url": steps[0]["url"], "headers": {}, "body": ""}
            fields |= {"steps": steps, "assertions": {}}
        else:
            fields |= {
                "method": str(probe.get("method") or "GET").upper(),
                "url": _join(base_url, probe.get("path", "")),
                "headers": dict(probe.get("headers") or {}),
                "body": "",
                "steps": [],
                "assertions": dict(probe.get("assertions") or {}),
            }
        specs.append(fields)
    if preset.statuspage_json and preset.status_page:
        specs.append(
            {
                "name": STATUSPAGE_PROBE,
                "kind": ProbeKind.STATUSPAGE,
                "interval_s": STATUSPAGE_INTERVAL_S,
                "timeout_s": 10.0,
                "method": "GET",
                "url": preset.status_page,
                "headers": {},
                "body": "",
                "steps": [],
                "assertions": {},
            }
        )
    return specs


def plan(
    preset: Preset,
    *,
    environment: str,
    slug: str | None = None,
    name: str | None = None,
    base_url: str | None = None,
    owner_email: str | None = None,
    api_version: str | None = None,
    probes: bool = True,
) -> Plan:
    """What applying ``preset`` as (slug, environment) would create or change; reads only."""
    if environment not in Environment.values:
        raise PresetError(
            f"unknown environment {environment!r}; choose one of {', '.join(Environment.values)}"
        )
    slug = slug or preset.name
    existing = Integration.objects.filter(slug=slug, environment=environment).first()
    url = base_url or (existing.base_url if existing and existing.base_url else "")
    if not url:
        if preset.placeholders():
            raise PresetError(
                f"preset {preset.name!r} needs a base URL (--base-url): its pattern is "
                f"{preset.base_url} "
                f"(fill in {', '.join('<' + p + '>' for p in preset.placeholders())})"
            )
        url = preset.base_url
    if re.search(r"<[a-z_]+>", url):
        raise PresetError(f"fill in the base URL's placeholders: {url}")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PresetError(f"base URL must be an absolute http(s) URL, got {url!r}")
    host = parts.hostname.lower()
    templates = preset.path_templates(url)
    wanted: dict[str, Any] = {
        "name": (name or (existing.name if existing else preset.title))[:100],
        "slug": slug,
        "environment": environment,
        "base_url": url,
        "preset": preset.name,
        "require_https": not (parts.scheme == "http" and is_loopback(host)),
        "path_templates": "\n".join(templates),
        "redact_names": ", ".join(preset.redact_names),
        "host_patterns": "\n".join(_host_patterns(preset, host)),
    }
    if api_version or preset.api_version:
        wanted["expected_api_version"] = api_version or preset.api_version
    if owner_email:
        wanted["owner_email"] = owner_email
    if existing is not None:
        # Re-applying keeps what the user added and what they did not ask to change.
        wanted["path_templates"] = _merged(existing.path_templates, templates, "\n")
        wanted["redact_names"] = _merged(existing.redact_names, list(preset.redact_names), ", ")
        wanted["host_patterns"] = _merged(
            existing.host_patterns, _lines(wanted["host_patterns"]), "\n"
        )
        if existing.expected_api_version and not api_version:
            wanted.pop("expected_api_version", None)  # the user's pin wins over the preset's
        if base_url is None:
            wanted["require_https"] = existing.require_https
        integration = existing
    else:
        integration = Integration(**wanted)
    candidate = copy.copy(integration)
    for key, value in wanted.items():
        setattr(candidate, key, value)
    try:
        candidate.full_clean(validate_unique=False, validate_constraints=False)
    except ValidationError as exc:
        problems = "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())
        raise PresetError(problems) from None
    result = Plan(preset, integration, wanted)
    changed = {
        k: (getattr(existing, k) if existing else None, v)
        for k, v in wanted.items()
        if existing is None or getattr(existing, k) != v
    }
    if changed:
        shown = {k: v for k, v in changed.items() if existing is not None or v not in ("", None)}
        result.changes.append(
            Change("integration", f"{wanted['name']} · {environment}", existing is None, shown)
        )

    if probes:
        stem = secret_stem(slug, environment)
        have = {p.name: p for p in existing.probes.all()} if existing else {}
        for spec in probe_specs(preset, url, stem):
            probe = have.get(spec["name"])
            diff = {
                k: (getattr(probe, k) if probe else None, v)
                for k, v in spec.items()
                if probe is None or getattr(probe, k) != v
            }
            if diff:
                result.probes.append(spec)
                result.changes.append(Change("probe", spec["name"], probe is None, diff))

    from monitoring.alerts.rules import KINDS

    covered = set(
        AlertRule.objects.filter(integration=None, enabled=True).values_list("kind", flat=True)
    )
    own = set(existing.rules.values_list("kind", flat=True)) if existing else set()
    for kind in preset.rules:
        cls = KINDS.get(kind)
        if cls is None or kind in covered or kind in own or cls.default_rule is not None:
            # An all-integrations rule watches it (or will: setup_upstream makes the default
            # ones), or this integration has its own: a second would alert twice.
            continue
        if cls.scope_error(candidate):
            continue
        rule = {"kind": kind, "name": f"{wanted['name']}: {RuleKind(kind).label}"[:100]}
        result.rules.append(rule)
        result.changes.append(Change("rule", rule["name"], True, {"kind": (None, kind)}))
    return result


def apply(plan: Plan, *, actor: str = "add_integration", request=None) -> Integration:
    """Write the plan (one transaction) and audit every change; returns the integration."""
    who: dict[str, Any] = (
        {"request": request}
        if request is not None
        else {"actor": actor, "actor_type": ActorType.SYSTEM}
    )
    with transaction.atomic():
        integration = plan.integration
        created = integration.pk is None
        changed = [k for k, v in plan.integration_fields.items() if getattr(integration, k) != v]
        if created or changed:
            before = None if created else audit.snapshot(integration, changed)
            for key, value in plan.integration_fields.items():
                setattr(integration, key, value)
            integration.full_clean()
            integration.save()
            _audit(integration, before, changed if not created else None, who)
        for spec in plan.probes:
            probe = Probe.objects.filter(integration=integration, name=spec["name"]).first()
            fields = [k for k in spec if k != "name"]
            before = audit.snapshot(probe, fields) if probe else None
            probe = probe or Probe(integration=integration)
            for key, value in spec.items():
                setattr(probe, key, value)
            probe.full_clean()
            probe.save()
            _audit(probe, before, fields if before is not None else None, who)
        for spec in plan.rules:
            rule = AlertRule.objects.create(integration=integration, **spec)
            _audit(rule, None, None, who)
    return integration


def _audit(obj, before: dict | None, fields: list[str] | None, who: dict[str, Any]) -> None:
    after = audit.snapshot(obj, fields)
    if before is None:
        audit.record(audit.Actions.CREATE, target=obj, after=after, **who)
        return
    keys = sorted(k for k in after if before.get(k) != after.get(k))
    if keys:
        audit.record(
            audit.Actions.UPDATE,
            target=obj,
            before={k: before.get(k) for k in keys},
            after={k: after[k] for k in keys},
            **who,
        )


def apply_preset(
    name: str, *, environment: str, actor: str = "add_integration", **options: Any
) -> tuple[Integration, Plan]:
    """Plan and apply the preset called ``name``; returns the integration and what changed."""
    from monitoring import presets

    try:
        preset = presets.get(name)
    except KeyError as exc:
        raise PresetError(str(exc.args[0])) from None
    result = plan(preset, environment=environment, **options)
    integration = apply(result, actor=actor) if result.changes else result.integration
    return integration, result
