"""The sync's tuning is checked at start-up (issue 15, part 6): every variable below, at and above its bounds
and not a number; a bad value stops `qbo-operator sync` with one line naming the variable, value and range."""

from __future__ import annotations

import pytest

from qbo_operator import cli
from qbo_operator.core.config import INTUIT_REQUEST_SECONDS, ConfigError, Tuning
from tests.support.config import GOOD

# (variable, Tuning field, lowest allowed, highest allowed, whole numbers only), stated here apart from the code.
RANGES: list[tuple[str, str, float, float, bool]] = [
    ("QBO_SYNC_PAGE_SIZE", "page_size", 10, 1000, True),
    ("QBO_SYNC_BATCH_SIZE", "batch_size", 1, 500, True),
    ("QBO_THROTTLE_WAIT_SECONDS", "throttle_wait", 0.1, 300, False),
    ("QBO_SYNC_BACKOFF_SECONDS", "backoff", 0.01, 60, False),
    ("QBO_SYNC_BACKOFF_MAX_SECONDS", "backoff_max", 0.01, 600, False),
    ("QBO_SYNC_RETRIES", "retries", 0, 20, True),
    ("QBO_SYNC_TIMEOUT_SECONDS", "timeout", 1, 600, False),
    ("QBO_SYNC_SETTLE_SECONDS", "settle", 0, 3600, False),
]


def _fmt(value: float) -> str:
    return f"{value:g}"


def _below(low: float, whole: bool) -> str:
    return _fmt(low - 1 if whole or low == 0 else low / 2)


def _above(high: float, whole: bool) -> str:
    return _fmt(high + 1 if whole else high * 1.5)


# The back-off ceiling may not be below the first back-off: pair each bound of one with a value of the other.
_PARTNER = {"QBO_SYNC_BACKOFF_SECONDS": ("QBO_SYNC_BACKOFF_MAX_SECONDS", "600")}
_PARTNER["QBO_SYNC_BACKOFF_MAX_SECONDS"] = ("QBO_SYNC_BACKOFF_SECONDS", "0.01")

ACCEPTED = [
    pytest.param(var, field, raw, id=f"{var}={raw}")
    for var, field, low, high, _ in RANGES
    for raw in (_fmt(low), _fmt(high), f" {_fmt(high)} ")
]
REFUSED = [
    pytest.param(var, raw, problem, low, high, id=f"{var}={raw!r}")
    for var, _, low, high, whole in RANGES
    for raw, problem in (
        (_below(low, whole), "is out of range"),
        (_above(high, whole), "is out of range"),
        ("soon", "is not a whole number" if whole else "is not a number"),
        *([("2.5", "is not a whole number")] if whole else [("nan", "is out of range"), ("inf", "is out of range")]),
    )
]


@pytest.mark.parametrize(("var", "field", "raw"), ACCEPTED)
def test_each_variable_is_accepted_at_its_bounds(var: str, field: str, raw: str) -> None:
    env = {var: raw, **dict([_PARTNER[var]] if var in _PARTNER else [])}
    assert getattr(Tuning.from_env(env), field) == float(raw)


@pytest.mark.parametrize(("var", "raw", "problem", "low", "high"), REFUSED)
def test_each_variable_is_refused_outside_its_range(var: str, raw: str, problem: str, low: float, high: float) -> None:
    with pytest.raises(ConfigError) as err:
        Tuning.from_env({var: raw})
    [line] = err.value.problems
    assert line.startswith(f"{var}={raw if problem == 'is out of range' else repr(raw)} {problem}")
    assert f"allowed {_fmt(low)}..{_fmt(high)}" in line


def test_every_variable_is_in_the_table() -> None:
    fields = set(Tuning.__dataclass_fields__)
    assert {field for _, field, *_ in RANGES} == fields


def test_problems_are_all_reported_at_once_and_the_backoff_ceiling_is_not_below_the_first() -> None:
    with pytest.raises(ConfigError) as err:
        Tuning.from_env({"QBO_SYNC_PAGE_SIZE": "1", "QBO_SYNC_RETRIES": "-1"})
    assert [p.split("=")[0] for p in err.value.problems] == ["QBO_SYNC_PAGE_SIZE", "QBO_SYNC_RETRIES"]
    with pytest.raises(ConfigError, match=r"QBO_SYNC_BACKOFF_MAX_SECONDS=2 is below QBO_SYNC_BACKOFF_SECONDS=5"):
        Tuning.from_env({"QBO_SYNC_BACKOFF_SECONDS": "5", "QBO_SYNC_BACKOFF_MAX_SECONDS": "2"})


def test_defaults_are_production_values_and_wait_out_intuits_120_seconds() -> None:
    t = Tuning.from_env({})
    assert (t.page_size, t.batch_size, t.throttle_wait, t.retries) == (1000, 500, 60.0, 5)
    assert t.timeout >= INTUIT_REQUEST_SECONDS == 120
    assert t.gives_up_after >= 5 * INTUIT_REQUEST_SECONDS
    assert t.backoff <= t.backoff_max
    for var, field, low, high, _ in RANGES:
        assert low <= getattr(t, field) <= high, var


def test_a_page_of_one_row_stops_the_sync_at_start_up(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The command that looped forever on QBO_SYNC_PAGE_SIZE=1 now exits 2 before it reads anything."""
    for var, value in GOOD.items():
        monkeypatch.setenv(var, value)
    monkeypatch.setenv("QBO_SYNC_PAGE_SIZE", "1")
    assert cli.main(["sync", "--namespace", "acme", "--name", "acme"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [
        "qbo-operator sync: configuration error: QBO_SYNC_PAGE_SIZE=1 is out of range "
        "(allowed 10..1000: Intuit refuses MAXRESULTS above 1000)"
    ]
