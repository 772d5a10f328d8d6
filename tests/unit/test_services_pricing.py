"""Service charges: the exact product of quantity and unit price, rounded half-up once."""

from decimal import ROUND_HALF_UP, Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alumia.domain.services_pricing import (
    SERVICES,
    ServicePrices,
    parse_quantity,
    quantity_text,
    service_charge,
)

PRICES = ServicePrices(storage_gb_hour=137, browser_session_minute=2_000, sandbox_minute=1_001,
                       collaboration_seat_day=99_999)

quantities = st.decimals(min_value=Decimal("0.000001"), max_value=Decimal(1_000_000_000), places=6,
                         allow_nan=False, allow_infinity=False)
prices = st.builds(ServicePrices, *(st.integers(0, 10**9) for _ in range(4)))


def reference(quantity: Decimal, unit: int) -> int:
    """Exact Decimal product (enough precision for every case), then half-up once."""
    exact = Decimal(quantity) * Decimal(unit)
    return int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))


@given(service=st.sampled_from(SERVICES), quantity=quantities, table=prices)
def test_charge_is_the_exact_product_rounded_half_up(service: str, quantity: Decimal,
                                                     table: ServicePrices) -> None:
    expected = reference(quantity, table.unit_price(service))
    assert service_charge(service, quantity, table) == expected
    assert service_charge(service, str(quantity), table) == expected
    assert service_charge(service, quantity_text(quantity), table) == expected


@given(quantity=quantities)
def test_charge_never_double_rounds(quantity: Decimal) -> None:
    # 0.5 microcent exactly rounds up; anything below rounds down: one rounding, on the product.
    charge = service_charge("sandbox", quantity, PRICES)
    exact = quantity * PRICES.sandbox_minute
    assert charge - Decimal("0.5") <= exact < charge + Decimal("0.5")


def test_hand_worked_examples() -> None:
    table = ServicePrices(storage_gb_hour=100, browser_session_minute=2_000, sandbox_minute=1_000,
                          collaboration_seat_day=100_000)
    assert service_charge("storage", "1.5", table) == 150
    assert service_charge("storage", "0.005", table) == 1  # 0.5 → 1 (half-up)
    assert service_charge("storage", "0.004999", table) == 0  # 0.4999 → 0
    assert service_charge("browser_session", "0.00025", table) == 1  # exactly 0.5
    assert service_charge("sandbox", "12.345678", table) == 12_346  # 12345.678
    assert service_charge("collaboration", 3, table) == 300_000


@pytest.mark.parametrize("bad", ["0", "-1", "0.0000001", "abc", "NaN", "Infinity", "1e10", "", True, 1.5])
def test_bad_quantities_are_refused(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_quantity(bad)  # type: ignore[arg-type]


def test_unknown_service_is_refused() -> None:
    with pytest.raises(ValueError):
        service_charge("gpu", "1", PRICES)


def test_quantity_text_is_canonical() -> None:
    assert quantity_text(parse_quantity("1.500000")) == "1.5"
    assert quantity_text(parse_quantity("1E+2")) == "100"
    assert quantity_text(parse_quantity(" 2 ")) == "2"
