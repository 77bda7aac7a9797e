"""The dashboard in a real Chromium: charts drawn, HTMX swaps, roles, small screens."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.utils import timezone

from monitoring.models import Alert, AlertState
from tests.browser import scene
from tests.conftest import PASSWORD
from tests.dashboard.conftest import make_log, record

pytestmark = pytest.mark.browser


@pytest.fixture
def world():
    return scene.seed(timezone.now(), per_hour=30)


def test_sign_in_then_the_overview_charts_are_drawn(session, viewer, world):
    page = session.page
    session.go("/")
    assert "/accounts/login/" in page.url
    page.fill("#id_username", "vera")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(session.base_url + "/")
    page.wait_for_load_state("networkidle")
    assert page.locator(".verdict.v-our_calls_failing").count() == 1  # Stripe's revoked key
    assert page.locator(".verdict.v-provider_down").count() == 1  # Twilio
    # Drawn, not blank: the failed-auth chart and every card's sparkline have ink on them.
    assert session.canvas_ink("#box-auth canvas") > 2000
    for box in page.locator(".icard .chart-box canvas").all():
        assert box.evaluate("c => Chart.getChart(c) !== undefined")
    assert session.canvas_ink(f"#box-spark-{world.paubox.pk} canvas") > 300
    session.screenshot("sign-in-overview")


def test_switching_the_time_range_updates_the_chart_in_place(session, viewer, world):
    session.sign_in_as(viewer)
    page = session.page
    session.go("/")
    page.evaluate(
        """() => { window.notReloaded = true;
                   const c = document.querySelector('#box-auth canvas');
                   window.firstChart = Chart.getChart(c);
                   window.firstLabels = window.firstChart.data.labels.slice(); }"""
    )
    page.click(".range a:has-text('7 d')")
    page.wait_for_url(re.compile(r"\?range=7d$"))
    page.wait_for_function(
        "() => Chart.getChart(document.querySelector('#box-auth canvas')).data.labels[0] "
        "!== window.firstLabels[0]"
    )
    same = page.evaluate(
        """() => ({ reloaded: !window.notReloaded,
                    sameChart: Chart.getChart(document.querySelector('#box-auth canvas'))
                               === window.firstChart,
                    labels: window.firstChart.data.labels.length })"""
    )
    assert same["reloaded"] is False
    assert same["sameChart"] is True  # updated in place: same canvas, same Chart
    assert same["labels"] in (42, 43)  # 7 days in 4-hour steps, aligned to whole steps
    assert page.locator(".range a[aria-current=true]").inner_text() == "7 d"
    assert "figures the last 7 d" in page.inner_text("#live")
    session.screenshot("overview-7d")


def test_live_refresh_runs_only_while_the_tab_is_visible(session, viewer, world):
    session.sign_in_as(viewer)
    page = session.page
    refreshes = []

    def is_refresh(request) -> bool:
        return request.headers.get("hx-request") == "true" and request.url.endswith("/?range=1h")

    page.on("request", lambda r: refreshes.append(r.url) if is_refresh(r) else None)
    page.clock.install()
    session.go("/?range=1h")
    with page.expect_response(lambda r: is_refresh(r.request)):
        page.clock.run_for(21_000)
    page.clock.run_for(1_000)  # htmx's settle timer runs on the installed clock too
    assert len(refreshes) == 1

    set_visibility = """state => {
        Object.defineProperty(document, 'visibilityState', {value: state, configurable: true});
        document.dispatchEvent(new Event('visibilitychange')); }"""
    page.evaluate(set_visibility, "hidden")
    page.clock.run_for(65_000)
    page.wait_for_timeout(300)
    assert len(refreshes) == 1  # hidden tab: three ticks went by without a request

    with page.expect_request(is_refresh):
        page.evaluate(set_visibility, "visible")  # back on the tab: catches up at once
        page.clock.run_for(50)
    assert len(refreshes) == 2


def test_the_request_log_filters_and_loads_the_next_page(session, viewer, integration):
    now = timezone.now()
    rows = [
        make_log(
            integration,
            now - dt.timedelta(seconds=n * 7),
            **(
                {"status": 401, "error_code": "invalid_api_key", "query": "key=[redacted]"}
                if n % 6 == 0
                else {}
            ),
        )
        for n in range(120)
    ]
    record(rows)
    session.sign_in_as(viewer)
    session.expected.append("status of 400")  # the bad filter at the end
    page = session.page
    session.go("/requests/")
    page.evaluate("() => { window.notReloaded = true; }")
    assert page.locator("tr.log-row").count() == 50
    page.click("#more a")
    page.wait_for_function("() => document.querySelectorAll('tr.log-row').length === 100")
    page.click("#more a")
    page.wait_for_function("() => document.querySelectorAll('tr.log-row').length === 120")
    assert page.locator("#more").count() == 0
    assert page.locator("tr.end").count() == 1

    page.fill("#id_status", "401")
    page.click("button:has-text('Apply filters')")
    page.wait_for_url(re.compile(r"status=401"))
    page.wait_for_function("() => document.querySelectorAll('tr.log-row').length === 20")
    statuses = page.locator("tr.log-row .status").all_inner_texts()
    assert set(statuses) == {"401"}
    assert page.evaluate("() => window.notReloaded") is True

    page.locator("tr.log-row").first.click()
    detail = page.locator(".row-detail td .entry").first
    detail.wait_for()
    assert "?key=[redacted]" in detail.inner_text()

    # The browser itself refuses status 999 (max="599"); the server's own checks still answer.
    page.fill("#id_path", "v1/messages")
    page.click("button:has-text('Apply filters')")
    page.locator("#results .notice.bad").wait_for()
    assert "A path template starts with /" in page.inner_text("#results")
    session.screenshot("request-log-bad-filter")


def test_an_operator_acknowledges_an_alert_and_sees_its_state_change(session, operator, world):
    session.sign_in_as(operator)
    page = session.page
    session.go("/alerts/")
    card = page.locator(f"#alert-{world.auth_alert.pk}")
    card.locator("input[name=note]").fill("Rotating the Stripe key")
    card.locator("button:has-text('Acknowledge')").click()
    page.locator(f"#alert-{world.auth_alert.pk} .state.s-acknowledged").wait_for()
    card = page.locator(f"#alert-{world.auth_alert.pk}")
    assert "Acknowledged by otto" in card.inner_text()
    assert "Rotating the Stripe key" in card.inner_text()
    assert card.locator("button:has-text('Acknowledge')").count() == 0
    # One alert is still firing: the nav badge followed along without a reload.
    assert page.inner_text("#firing-count").strip() == "1"
    world.auth_alert.refresh_from_db()
    assert world.auth_alert.state == AlertState.ACKNOWLEDGED
    session.screenshot("alert-acknowledged")


def test_a_viewer_has_no_acknowledge_button_and_a_forged_post_is_refused(session, viewer, world):
    session.sign_in_as(viewer)
    session.expected.append("403")
    page = session.page
    session.go("/alerts/")
    assert page.locator(f"#alert-{world.auth_alert.pk}").count() == 1
    assert page.locator("button:has-text('Acknowledge')").count() == 0
    assert page.locator("button:has-text('Resolve')").count() == 0
    status = page.evaluate(
        """async (url) => {
             const token = JSON.parse(document.body.getAttribute('hx-headers'))['X-CSRFToken'];
             const r = await fetch(url, {method: 'POST', headers: {'X-CSRFToken': token,
               'HX-Request': 'true', 'Content-Type': 'application/x-www-form-urlencoded'},
               body: 'note=forged'});
             return r.status; }""",
        f"/alerts/{world.auth_alert.pk}/acknowledge/",
    )
    assert status == 403
    assert Alert.objects.get(pk=world.auth_alert.pk).state == AlertState.FIRING


PAGES = [
    ("overview", "/"),
    ("integration", "/integrations/{stripe}/"),
    ("request-log", "/requests/"),
    ("alerts", "/alerts/"),
    ("alert", "/alerts/{alert}/"),
    ("rules", "/alerts/rules/"),
    ("rule-form", "/alerts/rules/new/"),
    ("probes", "/probes/"),
    ("probe", "/probes/{probe}/"),
]


@pytest.mark.parametrize("dark", [False, True], ids=["light", "dark"])
def test_every_page_fits_375_px_and_is_captured(open_session, admin_user, world, dark):
    values = {
        "stripe": world.stripe.pk,
        "alert": world.auth_alert.pk,
        "probe": world.twilio.probes.get().pk,
    }
    scheme = "dark" if dark else "light"
    for width in (1280, 375):
        session = open_session(width=width, dark=dark)
        session.go("/accounts/login/")
        session.screenshot(f"sign-in-{width}-{scheme}")
        session.sign_in_as(admin_user)
        for name, path in PAGES:
            response = session.go(path.format(**values))
            assert response.status == 200, path
            overflow = session.page.evaluate(
                "() => document.documentElement.scrollWidth - window.innerWidth"
            )
            assert overflow <= 0, f"{path} scrolls sideways by {overflow} px at {width} px"
            session.screenshot(f"{name}-{width}-{scheme}")
