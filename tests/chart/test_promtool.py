"""The chart's alerts proven in Prometheus's own rule engine: ``promtool check rules`` on the
rules the chart renders, and ``promtool test rules`` on tests/chart/promtool/alerts_test.yaml,
where every alert has a case that fires (exact labels and annotations) and cases that do not.

promtool comes with Debian's ``prometheus`` package: ``.ci/install-prometheus`` installs it
(``apt-get install -y --no-install-recommends prometheus``). Without it the promtool tests
are skipped, saying so; the checks of the test file itself and of the runbook links run
everywhere.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.render import CHART, ROOT, VARIANTS, of_kind, prometheus_rules, render
from tests.docs import anchors

PROMTOOL = shutil.which("promtool")
NO_PROMTOOL = (
    "promtool is not installed: run .ci/install-prometheus "
    "(apt-get install -y --no-install-recommends prometheus, Debian's package)"
)
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason=NO_PROMTOOL)

TESTS = Path(__file__).parent / "promtool" / "alerts_test.yaml"
RUNBOOK = ROOT / "docs" / "runbook.md"
ALERTS = [
    a["name"] for a in yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())["alerts"]
]


def _rules() -> list[dict[str, Any]]:
    return [rule for group in prometheus_rules()["groups"] for rule in group["rules"]]


def _write_rules(directory: Path) -> Path:
    path = directory / "valet-rules.yaml"
    path.write_text(yaml.safe_dump(prometheus_rules(), sort_keys=False))
    return path


def _promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


@needs_promtool
def test_promtool_check_rules_accepts_the_shipped_rules(tmp_path: Path) -> None:
    rules = _write_rules(tmp_path)
    result = _promtool("check", "rules", str(rules), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout, result.stdout


@needs_promtool
def test_promtool_unit_tests_of_every_alert_pass(tmp_path: Path) -> None:
    _write_rules(tmp_path)
    shutil.copy(TESTS, tmp_path / TESTS.name)
    result = _promtool("test", "rules", TESTS.name, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout, result.stdout


@needs_promtool
def test_promtool_unit_tests_catch_a_changed_rule(tmp_path: Path) -> None:
    """The unit tests have teeth: a shorter ``for`` on ValetGPUUnhealthy (set through the
    chart's alerts.for) makes the case that expects it still pending fail."""
    faster = prometheus_rules({"alerts": {"for": {"ValetGPUUnhealthy": "30s"}}})
    (tmp_path / "valet-rules.yaml").write_text(yaml.safe_dump(faster, sort_keys=False))
    shutil.copy(TESTS, tmp_path / TESTS.name)
    result = _promtool("test", "rules", TESTS.name, cwd=tmp_path)
    assert result.returncode != 0
    assert "alertname: ValetGPUUnhealthy, time: 1m30s" in result.stdout + result.stderr


def _cases() -> dict[str, list[dict[str, Any]]]:
    by_alert: dict[str, list[dict[str, Any]]] = {}
    for test in yaml.safe_load(TESTS.read_text())["tests"]:
        for case in test.get("alert_rule_test") or ():
            by_alert.setdefault(case["alertname"], []).append(case)
    return by_alert


@pytest.mark.parametrize("alert", ALERTS)
def test_every_alert_has_a_case_that_fires_and_one_that_does_not(alert: str) -> None:
    cases = _cases().get(alert, [])
    firing = [c for c in cases if c.get("exp_alerts")]
    quiet = [c for c in cases if not c.get("exp_alerts")]
    assert firing, f"{TESTS.name}: no case where {alert} fires"
    assert quiet, f"{TESTS.name}: no case where {alert} does not fire"
    (rule,) = [r for r in _rules() if r["alert"] == alert]
    for case in firing:
        for expected in case["exp_alerts"]:
            # promtool compares labels and annotations exactly: every one is stated.
            assert expected["exp_labels"]["severity"] == rule["labels"]["severity"]
            assert set(expected["exp_annotations"]) == set(rule["annotations"])
            assert expected["exp_annotations"]["runbook_url"] == rule["annotations"]["runbook_url"]


def test_the_unit_tests_name_only_alerts_the_chart_has() -> None:
    assert set(_cases()) <= set(ALERTS)


@pytest.mark.parametrize("alert", ALERTS)
def test_every_alert_has_a_runbook_url_to_its_runbook_section(alert: str) -> None:
    manifests = render(VARIANTS["monitoring-on"])
    (rule,) = [r for r in _rules() if r["alert"] == alert]
    url = rule["annotations"]["runbook_url"]
    assert url == f"docs/runbook.md#{alert.lower()}"
    maps = {m["metadata"]["name"]: m for m in of_kind(manifests, "ConfigMap")}
    grafana = yaml.safe_load(maps["valet-grafana-alerts"]["data"]["valet-alerts.yaml"])
    (grafana_rule,) = [r for g in grafana["groups"] for r in g["rules"] if r["title"] == alert]
    assert grafana_rule["annotations"]["runbook_url"] == url
    path, anchor = url.split("#")
    section = anchors((ROOT / path).read_text()).get(anchor)
    assert section is not None, f"{path} has no section #{anchor}"
    for part in ("What it means", "How to check", "What to do"):
        assert part in section, f"{path}#{anchor} does not say {part!r}"


def test_runbook_url_and_for_are_values() -> None:
    rules = prometheus_rules(
        {
            "alerts": {
                "runbookUrl": "https://git.example.com/valet/blob/v0.1.0/docs/runbook.md",
                "for": {"ValetGPUUnhealthy": "30s"},
            }
        }
    )
    by_name = {r["alert"]: r for g in rules["groups"] for r in g["rules"]}
    gpu = by_name["ValetGPUUnhealthy"]
    assert gpu["for"] == "30s"
    assert gpu["annotations"]["runbook_url"] == (
        "https://git.example.com/valet/blob/v0.1.0/docs/runbook.md#valetgpuunhealthy"
    )
    assert by_name["ValetBufferExhausted"]["for"] == "5m"  # the others keep theirs


def test_the_schema_knows_every_alert_name_for_overrides() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    names = schema["properties"]["alerts"]["properties"]["for"]["propertyNames"]["enum"]
    assert names == ALERTS, "values.schema.json alerts.for names differ from files/alerts.yaml"
