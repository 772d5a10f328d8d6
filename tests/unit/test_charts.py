"""The daily spend chart: well-formed SVG, bars proportional to microcents, dollar labels, an empty state."""

import math
import re
import xml.etree.ElementTree as ET
from datetime import date, timedelta

from hypothesis import given
from hypothesis import strategies as st

from alumia.domain.money import format_usd
from alumia.web.charts import nice_step, spend_chart

NS = {"svg": "http://www.w3.org/2000/svg"}
START = date(2026, 10, 30)


def points(values: list[tuple[int, int]], start: date = START) -> list[dict]:
    return [{"date": (start + timedelta(days=i)).isoformat(), "chargedMicrocents": platform,
             "byokCostMicrocents": byok} for i, (platform, byok) in enumerate(values)]


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # also proves the markup is well-formed XML


def bars(root: ET.Element, kind: str) -> list[float]:
    return [float(r.get("height", "nan")) for r in root.iterfind(f".//svg:rect[@class='bar {kind}']", NS)]


def texts(root: ET.Element, cls: str) -> list[str]:
    return [t.text or "" for t in root.iterfind(f".//svg:text[@class='{cls}']", NS)]


def test_the_chart_is_an_accessible_image_with_a_title_a_description_and_a_legend() -> None:
    root = parse(spend_chart(points([(300_000, 100_000), (0, 250_000)])))
    assert root.get("role") == "img"
    title = root.find("svg:title", NS)
    desc = root.find("svg:desc", NS)
    assert title is not None and desc is not None
    assert root.get("aria-labelledby") == title.get("id") == "spend-chart-title"
    assert root.get("aria-describedby") == desc.get("id") == "spend-chart-desc"
    assert title.text == "Daily spend, the last 2 days"
    assert desc.text == ("Platform charges to the balance and the list-price value of BYOK usage per day "
                         "(Oct 30 – Oct 31, UTC). Totals: platform charges $0.30, BYOK usage value $0.35.")
    legend = [t.text for t in root.iterfind("svg:g[@class='legend']/svg:text", NS)]
    assert legend == ["Platform charges", "BYOK usage value (list price)"]


def test_bar_heights_are_proportional_to_the_microcents() -> None:
    values = [(100_000, 50_000), (300_000, 0), (0, 200_000), (150_000, 150_000), (1, 0)]
    root = parse(spend_chart(points(values)))
    platform, byok = bars(root, "platform"), bars(root, "byok")
    assert len(platform) == len(byok) == len(values)
    unit = platform[1] / 300_000
    for (p, b), hp, hb in zip(values, platform, byok, strict=True):
        assert math.isclose(hp, p * unit, abs_tol=0.01) and math.isclose(hb, b * unit, abs_tol=0.01)
    assert platform[2] == byok[1] == 0
    # Each bar stands on the baseline: its top is the baseline minus its height.
    for rect in root.iterfind(".//svg:rect[@class='bar platform']", NS):
        assert math.isclose(float(rect.get("y", "nan")) + float(rect.get("height", "nan")),
                            float(root.find("svg:line", NS).get("y1", "nan")), abs_tol=0.01)  # type: ignore[union-attr]


def test_the_y_axis_is_labelled_in_dollars_on_round_steps_above_the_tallest_bar() -> None:
    root = parse(spend_chart(points([(280_000, 0), (0, 123_456)])))
    assert texts(root, "y-label") == ["$0.00", "$0.10", "$0.20", "$0.30"]
    tiny = parse(spend_chart(points([(250, 900)])))
    assert texts(tiny, "y-label") == ["$0.00", "$0.0005", "$0.001"]
    big = parse(spend_chart(points([(1_234_000_000, 0)])))
    assert texts(big, "y-label") == [format_usd(v) for v in (0, 500_000_000, 1_000_000_000, 1_500_000_000)]


def test_every_seventh_day_back_from_today_is_labelled_and_every_day_has_a_tooltip() -> None:
    values = [(i * 1_000, 0) for i in range(30)]
    root = parse(spend_chart(points(values)))
    assert texts(root, "x-label") == ["Oct 31", "Nov 7", "Nov 14", "Nov 21", "Nov 28"]
    days = root.findall("svg:g[@class='day']", NS)
    assert [g.get("data-date") for g in days][-1] == "2026-11-28"
    assert days[3].findtext("svg:title", namespaces=NS) == \
        "Nov 2: platform charges $0.003, BYOK usage value $0.00"


def test_no_money_in_the_period_says_so_and_draws_no_bars() -> None:
    for empty in (points([(0, 0)] * 30), []):
        svg = spend_chart(empty)
        root = parse(svg)
        assert texts(root, "empty") == [f"No spend in {'the last 30 days' if empty else 'this period'}"]
        assert all(h == 0 for h in bars(root, "platform") + bars(root, "byok"))
        assert texts(root, "y-label") == ["$0.00"]
        assert not re.search(r"nan|inf", svg, re.IGNORECASE)
    assert "No platform charges and no BYOK usage in the last 30 days" in spend_chart(points([(0, 0)] * 30))


def test_values_that_are_not_whole_non_negative_microcents_count_as_nothing() -> None:
    root = parse(spend_chart([{"date": "2026-11-01", "chargedMicrocents": -5, "byokCostMicrocents": True},
                              {"date": "2026-11-02", "chargedMicrocents": 1.5, "byokCostMicrocents": None},
                              {"date": "2026-11-03"}]))
    assert texts(root, "empty") == ["No spend in the last 3 days"]


def test_everything_is_escaped() -> None:
    svg = spend_chart(points([(10, 0)]), chart_id='x" onload="alert(1)"><script>')
    root = parse(svg)
    assert "<script" not in svg and 'onload="' not in svg
    assert root.get("aria-labelledby") == 'x" onload="alert(1)"><script>-title'


def test_a_narrow_chart_puts_the_legend_on_two_rows() -> None:
    wide = parse(spend_chart(points([(1, 1)])))
    narrow = parse(spend_chart(points([(1, 1)]), width=320, height=220))
    assert narrow.get("viewBox") == "0 0 320 220"
    rows = {r.get("y") for r in narrow.iterfind("svg:g[@class='legend']/svg:rect", NS)}
    assert len(rows) == 2
    assert len({r.get("y") for r in wide.iterfind("svg:g[@class='legend']/svg:rect", NS)}) == 1


@given(st.integers(min_value=0, max_value=10**15), st.integers(min_value=1, max_value=10))
def test_nice_step_is_the_smallest_round_step_that_reaches(largest: int, ticks: int) -> None:
    step = nice_step(largest, ticks)
    mantissa = int(str(step).rstrip("0") or "0")
    assert mantissa in (1, 2, 5) and step * ticks >= largest
    smaller = [m * 10**e for e in range(len(str(step)) + 1) for m in (1, 2, 5) if m * 10**e < step]
    assert all(s * ticks < largest for s in smaller)


@given(st.lists(st.tuples(st.integers(0, 10**12), st.integers(0, 10**12)), min_size=1, max_size=40))
def test_any_series_draws_finite_bars_inside_the_plot(values: list[tuple[int, int]]) -> None:
    svg = spend_chart(points(values))
    assert not re.search(r"nan|inf", svg, re.IGNORECASE)
    root = parse(svg)
    heights = bars(root, "platform") + bars(root, "byok")
    baseline = float(root.find("svg:line", NS).get("y1", "nan"))  # type: ignore[union-attr]
    assert all(0 <= h <= baseline for h in heights)
    largest = max(max(p, b) for p, b in values)
    if largest:
        tallest = max(heights)
        for (p, b), hp, hb in zip(values, bars(root, "platform"), bars(root, "byok"), strict=True):
            assert math.isclose(hp, tallest * p / largest, abs_tol=0.02)
            assert math.isclose(hb, tallest * b / largest, abs_tol=0.02)
