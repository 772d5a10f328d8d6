"""Money as integer microcents: 1 USD = 100 cents = 1,000,000 microcents."""

from decimal import ROUND_HALF_UP, Decimal

MICROCENTS_PER_CENT = 10_000
MICROCENTS_PER_DOLLAR = 1_000_000


def round_half_up(value: Decimal) -> int:
    """Round an exact non-negative or negative Decimal to the nearest integer, halves away from zero."""
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def divide_half_up(numerator: int, denominator: int) -> int:
    """numerator / denominator (denominator > 0) rounded as `round_half_up` does, in integers only."""
    whole, remainder = divmod(abs(numerator), denominator)
    if 2 * remainder >= denominator:
        whole += 1
    return whole if numerator >= 0 else -whole


def cents_to_microcents(cents: int) -> int:
    """Whole cents to microcents."""
    return cents * MICROCENTS_PER_CENT


def microcents_to_cents_floor(microcents: int) -> int:
    """Microcents to whole cents, rounded down (towards minus infinity), as balances are shown."""
    return microcents // MICROCENTS_PER_CENT


def format_usd(microcents: int) -> str:
    """Microcents as a dollar string for people, e.g. 1_234_567 -> '$1.234567' trimmed to cents when exact."""
    sign = "-" if microcents < 0 else ""
    whole, frac = divmod(abs(microcents), MICROCENTS_PER_DOLLAR)
    digits = f"{frac:06d}".rstrip("0").ljust(2, "0")
    return f"{sign}${whole}.{digits}"
