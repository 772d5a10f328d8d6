"""Prices of the platform's own infrastructure, and the exact charge for a metered quantity (pure).

docs/product.md "Money": storage, browser sessions, sandboxes and collaboration draw from the balance
whatever the routing (BYOK keys change nothing here), at prices that are settings. The platform fee
applies to token cost only, never to these.

Units and default prices (integer microcents per metered unit; 1 USD = 1,000,000 microcents):

=================  =========  ===================  ============================================
service            unit       default              setting (environment)
=================  =========  ===================  ============================================
storage            GB-hour    100 ($0.0001)        ALUMIA_SERVICE_PRICE_STORAGE_GB_HOUR_MICROCENTS
browser_session    minute     2,000 ($0.002)       ALUMIA_SERVICE_PRICE_BROWSER_SESSION_MINUTE_MICROCENTS
sandbox            minute     1,000 ($0.001)       ALUMIA_SERVICE_PRICE_SANDBOX_MINUTE_MICROCENTS
collaboration      seat-day   100,000 ($0.10)      ALUMIA_SERVICE_PRICE_COLLABORATION_SEAT_DAY_MICROCENTS
=================  =========  ===================  ============================================

Storage is priced per GB-month in the spec and metered in GB-hours: the setting is the GB-hour price,
and a GB-month is 730 hours, so the default is $0.073 per GB-month (shown by the pricing endpoint).

A charge is `round_half_up(quantity × unit price)` to a whole microcent, computed exactly: the
quantity (more than 0, at most 6 decimal places, at most 1,000,000,000 units) is scaled to an
integer, so no float and no Decimal context precision is involved, and there is one rounding.
"""

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

SERVICES: tuple[str, ...] = ("storage", "browser_session", "sandbox", "collaboration")
UNITS: dict[str, str] = {"storage": "GB-hour", "browser_session": "minute", "sandbox": "minute",
                         "collaboration": "seat-day"}
HOURS_PER_MONTH = 730
QUANTITY_DECIMALS = 6
MAX_QUANTITY = Decimal(1_000_000_000)
_SCALE: int = 10**QUANTITY_DECIMALS


@dataclass(frozen=True, slots=True)
class ServicePrices:
    """Integer microcents per metered unit of each service."""

    storage_gb_hour: int = 100
    browser_session_minute: int = 2_000
    sandbox_minute: int = 1_000
    collaboration_seat_day: int = 100_000

    def unit_price(self, service: str) -> int:
        """Microcents per unit of `service`; ValueError for an unknown service."""
        prices = {"storage": self.storage_gb_hour, "browser_session": self.browser_session_minute,
                  "sandbox": self.sandbox_minute, "collaboration": self.collaboration_seat_day}
        if service not in prices:
            raise ValueError(f"service must be one of {', '.join(SERVICES)}")
        return prices[service]


def parse_quantity(quantity: Decimal | str | int) -> Decimal:
    """A metered quantity as an exact Decimal: finite, > 0, at most 6 decimals, at most 10^9.

    Strings and ints are read exactly; floats are refused here (the API turns a JSON number into
    its shortest decimal text first). Raises ValueError with a message for people.
    """
    if isinstance(quantity, bool) or not isinstance(quantity, Decimal | str | int):
        raise ValueError("quantity must be a decimal number")
    try:
        value = Decimal(quantity.strip()) if isinstance(quantity, str) else Decimal(quantity)
    except InvalidOperation as exc:
        raise ValueError("quantity must be a decimal number") from exc
    if not value.is_finite():
        raise ValueError("quantity must be a finite decimal number")
    if value <= 0:
        raise ValueError("quantity must be greater than 0")
    if value > MAX_QUANTITY:
        raise ValueError(f"quantity must be at most {MAX_QUANTITY}")
    exponent = value.normalize().as_tuple().exponent
    assert isinstance(exponent, int)  # finite
    if exponent < -QUANTITY_DECIMALS:
        raise ValueError(f"quantity must have at most {QUANTITY_DECIMALS} decimal places")
    return value


def quantity_text(quantity: Decimal) -> str:
    """The canonical decimal text of a quantity: no exponent, no trailing zeros ("1.5", "30")."""
    return format(quantity.normalize(), "f")


def service_charge(service: str, quantity: Decimal | str | int, prices: ServicePrices) -> int:
    """The charge in microcents for `quantity` units of `service`: exact product, rounded half-up once."""
    unit = prices.unit_price(service)
    value = parse_quantity(quantity)
    scaled = int(value * _SCALE)  # exact: at most 6 decimals
    numerator = scaled * unit
    # Half-up on non-negative integers: floor((2n + d) / 2d).
    return (2 * numerator + _SCALE) // (2 * _SCALE)
