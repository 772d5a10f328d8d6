"""domain/tariff.py: one call's money — the hold, the bill within it, what fits — from one object."""

from decimal import Decimal

from alumia.domain.catalog import Prices
from alumia.domain.pricing import FeePolicy
from alumia.domain.tariff import Bill, Tariff
from alumia.domain.usage import TokenUsage

PRICES = Prices(input=Decimal("2"), output=Decimal("8"), cached_input=Decimal("0.5"),
                cache_write=Decimal("2.5"))
POLICY = FeePolicy(fee_bps=550, waiver_threshold_cents=10_000)
USAGE = TokenUsage(input_tokens=1_000, output_tokens=500)  # 1,000 × 2 + 500 × 8 = 6,000 microcents


def platform(deposits_cents: int = 20_000) -> Tariff:
    return Tariff(PRICES, POLICY, deposits_cents, pays=True)


def test_a_platform_call_is_billed_its_cost_and_fee() -> None:
    assert platform().bill(USAGE, hold=100_000) == Bill(cost=6_000, fee=330, charged=6_330)
    assert platform(deposits_cents=5_000).bill(USAGE, hold=100_000) == Bill(cost=6_000, fee=0, charged=6_000)


def test_a_bill_never_passes_the_hold() -> None:
    assert platform().bill(USAGE, hold=5_000) == Bill(cost=6_000, fee=330, charged=5_000)
    assert not platform().fits(USAGE, hold=6_329) and platform().fits(USAGE, hold=6_330)


def test_byok_and_free_calls_record_their_value_and_are_charged_nothing() -> None:
    byok = Tariff(PRICES, POLICY, 20_000, pays=False)
    assert byok.bill(USAGE, hold=0) == Bill(cost=6_000, fee=0, charged=0)


def test_the_worst_case_is_every_request_byte_at_the_dearest_input_price_plus_the_output_limit() -> None:
    # 100 bytes × 2.5 (the cache-write price) + 1,000 × 8 = 8,250, plus 5.5 % = 8,704 (half-up).
    assert platform().worst_case(request_bytes=100, output_tokens=1_000) == 8_704


def test_what_fits_a_hold_is_the_most_output_that_bills_within_it() -> None:
    affordable = platform().affordable_output(USAGE, hold=5_000)
    assert platform().fits(TokenUsage(1_000, affordable), 5_000)
    assert not platform().fits(TokenUsage(1_000, affordable + 1), 5_000)
