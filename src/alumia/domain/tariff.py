"""One call's money, in one place: what to hold before it, what to charge after it, what fits a hold.

A `Tariff` is the model's prices under the fee policy and the org's deposits (which decide the fee
waiver), for the route the call takes. Only the platform route moves money: BYOK and free calls record
their list-price value and are charged nothing. The gateway asks the same object at every step — the
reservation before the call, the stream's ceiling while it runs, the charge when it ends — so the three
can never disagree.
"""

from dataclasses import dataclass

from alumia.domain.catalog import Prices
from alumia.domain.pricing import (
    FeePolicy,
    affordable_output_tokens,
    cost_microcents,
    platform_charge,
    reservation,
)
from alumia.domain.usage import TokenUsage


@dataclass(frozen=True, slots=True)
class Bill:
    """What one call is recorded as costing, in microcents: list price, fee, and what the balance pays."""

    cost: int
    fee: int
    charged: int


@dataclass(frozen=True, slots=True)
class Tariff:
    """The prices of one call; `pays` is True on the platform route, where the balance pays."""

    prices: Prices
    policy: FeePolicy
    cumulative_deposits_cents: int
    pays: bool

    def worst_case(self, request_bytes: int, output_tokens: int) -> int:
        """The most the call can cost (`pricing.reservation`): what is held before it is sent."""
        return reservation(self.prices, request_bytes, output_tokens, self.policy,
                           self.cumulative_deposits_cents).total_microcents

    def price(self, usage: TokenUsage) -> int:
        """What `usage` costs the balance on the platform route, fee included."""
        charge = platform_charge(self.prices, usage, self.policy, self.cumulative_deposits_cents)
        return charge.total_microcents

    def fits(self, usage: TokenUsage, hold: int) -> bool:
        """Whether `usage` bills within `hold`."""
        return self.price(usage) <= hold

    def affordable_output(self, usage: TokenUsage, hold: int) -> int:
        """The most output tokens, with `usage`'s input, that bill within `hold`."""
        return affordable_output_tokens(self.prices, usage, self.policy, self.cumulative_deposits_cents, hold)

    def bill(self, usage: TokenUsage, hold: int) -> Bill:
        """The call's record: on the platform route the charge, never above a hold it had (0: none);
        otherwise the list-price value, with nothing charged."""
        if not self.pays:
            return Bill(cost=cost_microcents(self.prices, usage), fee=0, charged=0)
        charge = platform_charge(self.prices, usage, self.policy, self.cumulative_deposits_cents)
        total = charge.total_microcents
        return Bill(cost=charge.cost_microcents, fee=charge.fee_microcents,
                    charged=min(total, hold) if hold else total)
