"""What a call costs: list-price cost, the platform fee, the waiver, and the worst case of a call."""

from dataclasses import dataclass

from alumia.domain.catalog import Prices
from alumia.domain.money import divide_half_up
from alumia.domain.usage import TokenUsage

# Prices are USD per million tokens and 1 USD is a million microcents, so one token at $1/MTok costs
# exactly one microcent: cost in microcents = Σ tokens × price, with no scaling.


@dataclass(frozen=True, slots=True)
class FeePolicy:
    """The platform fee and the deposit threshold below which it is waived (settings)."""

    fee_bps: int = 550
    waiver_threshold_cents: int = 10_000

    def fee_applies(self, cumulative_deposits_cents: int) -> bool:
        """The fee applies once cumulative deposits exceed the threshold."""
        return cumulative_deposits_cents > self.waiver_threshold_cents

    def waiver_remaining_cents(self, cumulative_deposits_cents: int) -> int:
        """Deposits still to make before the fee starts."""
        return max(0, self.waiver_threshold_cents - cumulative_deposits_cents)


@dataclass(frozen=True, slots=True)
class Charge:
    """The money side of one call, in microcents."""

    cost_microcents: int
    fee_microcents: int

    @property
    def total_microcents(self) -> int:
        """What the balance pays."""
        return self.cost_microcents + self.fee_microcents


def cost_microcents(prices: Prices, usage: TokenUsage) -> int:
    """The list-price cost of the tokens used, exact, rounded half-up once to a whole microcent.

    In integers over the prices' common denominator (`Prices.exact`): the same result as the sum in
    Decimal rounded by `money.round_half_up`, at a fraction of the cost on every call.
    """
    (inp, out, cached, write), denominator = prices.exact
    exact = (usage.input_tokens * inp + usage.output_tokens * out + usage.cache_read_tokens * cached
             + usage.cache_write_tokens * write)
    return divide_half_up(exact, denominator)


def fee_microcents(cost: int, policy: FeePolicy, fee_applies: bool) -> int:
    """The platform fee on a list-price cost: round_half_up(cost × bps / 10000), or 0 when waived."""
    if not fee_applies:
        return 0
    return divide_half_up(cost * policy.fee_bps, 10_000)


def platform_charge(prices: Prices, usage: TokenUsage, policy: FeePolicy,
                    cumulative_deposits_cents: int) -> Charge:
    """The charge of a platform-routed call."""
    cost = cost_microcents(prices, usage)
    return Charge(cost, fee_microcents(cost, policy, policy.fee_applies(cumulative_deposits_cents)))


def reservation(prices: Prices, request_bytes: int, max_output_tokens: int, policy: FeePolicy,
                cumulative_deposits_cents: int) -> Charge:
    """The most a platform call can cost, reserved before it is sent.

    Input: one token per request byte (a BPE token covers at least one byte of text, so the body's
    length bounds its tokens; JSON punctuation only adds margin), each priced at the dearest input
    price (a cache write can cost more than plain input). Output: the request's max_tokens or, when
    absent, the model's output limit. Plus the fee when it applies.
    """
    (inp, out, cached, write), denominator = prices.exact
    cost = divide_half_up(request_bytes * max(inp, cached, write) + max_output_tokens * out, denominator)
    return Charge(cost, fee_microcents(cost, policy, policy.fee_applies(cumulative_deposits_cents)))


def embedding_reservation(prices: Prices, request_bytes: int, policy: FeePolicy,
                          cumulative_deposits_cents: int) -> Charge:
    """The most a platform embedding call can cost: its input alone, bounded by the request's bytes.

    Every input token costs at least one byte of the body, text or token id (a token id is at least a
    digit and a separator), so the body's length bounds the tokens; each is priced at the dearest input
    price, plus the fee when it applies. An embedding produces no output tokens: this is `reservation`
    with none, which is what the call path holds for a model whose output limit is 0 (the catalog's
    embedding models).
    """
    return reservation(prices, request_bytes, 0, policy, cumulative_deposits_cents)


def affordable_output_tokens(prices: Prices, usage: TokenUsage, policy: FeePolicy,
                             cumulative_deposits_cents: int, budget_microcents: int) -> int:
    """The most output tokens, with `usage`'s input as it is, whose charge stays within the budget.

    For an answer that went past its hold (a provider that ignored the limit): at most usage's own
    output, 0 when even its input alone does not fit. The charge grows with output tokens, so a
    binary search over them is exact.
    """
    def fits(output: int) -> bool:
        charge = platform_charge(prices, TokenUsage(usage.input_tokens, output, usage.cache_read_tokens,
                                                    usage.cache_write_tokens), policy,
                                 cumulative_deposits_cents)
        return charge.total_microcents <= budget_microcents

    low, high = 0, usage.output_tokens
    if not fits(0):
        return 0
    while low < high:
        middle = (low + high + 1) // 2
        if fits(middle):
            low = middle
        else:
            high = middle - 1
    return low
