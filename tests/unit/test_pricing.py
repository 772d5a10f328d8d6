"""Cost, fee and waiver: exact integer microcents, one half-up rounding per amount."""

from decimal import Decimal, localcontext

from hypothesis import given
from hypothesis import strategies as st

from alumia.domain.catalog import Prices, load_catalog
from alumia.domain.money import divide_half_up, round_half_up
from alumia.domain.pricing import (
    FeePolicy,
    cost_microcents,
    embedding_reservation,
    fee_microcents,
    platform_charge,
    reservation,
)
from alumia.domain.usage import TokenUsage

LUNA = Prices(Decimal("0.2"), Decimal("1.2"), Decimal("0.02"), Decimal("0.25"))


def test_one_token_at_one_dollar_per_million_is_one_microcent() -> None:
    prices = Prices(Decimal(1), Decimal(1), Decimal(1), Decimal(1))
    assert cost_microcents(prices, TokenUsage(input_tokens=1)) == 1


def test_cost_sums_every_token_kind_then_rounds_half_up_once() -> None:
    usage = TokenUsage(input_tokens=6, output_tokens=6, cache_read_tokens=25, cache_write_tokens=2)
    # 6*0.2 + 6*1.2 + 25*0.02 + 2*0.25 = 1.2 + 7.2 + 0.5 + 0.5 = 9.4 -> 9
    assert cost_microcents(LUNA, usage) == 9
    # 0.5 exactly rounds up: 25 cached tokens at 0.02 = 0.5
    assert cost_microcents(LUNA, TokenUsage(cache_read_tokens=25)) == 1
    # 2.5 -> 3 (half-up, not banker's rounding to 2)
    assert cost_microcents(Prices(Decimal("2.5"), Decimal(0), Decimal(0), Decimal(0)),
                           TokenUsage(input_tokens=1)) == 3


def test_fee_is_550_bps_of_cost_rounded_half_up_only_after_the_waiver() -> None:
    policy = FeePolicy()
    assert fee_microcents(1000, policy, fee_applies=True) == 55
    assert fee_microcents(10, policy, fee_applies=True) == 1  # 0.55 -> 1
    assert fee_microcents(9, policy, fee_applies=True) == 0  # 0.495 -> 0
    assert fee_microcents(1000, policy, fee_applies=False) == 0


def test_waiver_holds_until_deposits_exceed_100_dollars() -> None:
    policy = FeePolicy()
    assert not policy.fee_applies(0)
    assert not policy.fee_applies(10_000)
    assert policy.fee_applies(10_001)
    assert policy.waiver_remaining_cents(0) == 10_000
    assert policy.waiver_remaining_cents(2_500) == 7_500
    assert policy.waiver_remaining_cents(20_000) == 0


def test_platform_charge_adds_the_fee_once_deposits_pass_the_threshold() -> None:
    usage = TokenUsage(input_tokens=1_000_000, output_tokens=1_000_000)  # $0.20 + $1.20
    waived = platform_charge(LUNA, usage, FeePolicy(), cumulative_deposits_cents=10_000)
    assert (waived.cost_microcents, waived.fee_microcents) == (1_400_000, 0)
    assert waived.total_microcents == 1_400_000
    charged = platform_charge(LUNA, usage, FeePolicy(), cumulative_deposits_cents=10_001)
    assert (charged.cost_microcents, charged.fee_microcents) == (1_400_000, 77_000)
    assert charged.total_microcents == 1_477_000


@given(st.integers(0, 10**9), st.integers(0, 10**9), st.integers(0, 10**8), st.integers(0, 10**8))
def test_cost_equals_exact_decimal_rounded_half_up(inp: int, out: int, read: int, write: int) -> None:
    usage = TokenUsage(input_tokens=inp, output_tokens=out, cache_read_tokens=read, cache_write_tokens=write)
    exact = inp * LUNA.input + out * LUNA.output + read * LUNA.cached_input + write * LUNA.cache_write
    cost = cost_microcents(LUNA, usage)
    assert isinstance(cost, int)
    assert Decimal(cost) - Decimal("0.5") <= exact < Decimal(cost) + Decimal("0.5")


def test_reservation_bounds_input_by_bytes_at_the_dearest_input_price_and_output_by_the_limit() -> None:
    # gpt-5.6-luna: input 0.2, cached 0.02, cache write 0.25, output 1.2 (per MTok = microcents per token)
    held = reservation(LUNA, request_bytes=1000, max_output_tokens=100, policy=FeePolicy(),
                       cumulative_deposits_cents=0)
    assert (held.cost_microcents, held.fee_microcents) == (250 + 120, 0)  # 1000 x 0.25 + 100 x 1.2
    with_fee = reservation(LUNA, 1000, 100, FeePolicy(), cumulative_deposits_cents=20_000)
    assert with_fee.total_microcents == 370 + 20  # round_half_up(370 x 0.055 = 20.35)


def test_catalog_has_every_provider_with_two_models_and_free_providers_cost_nothing() -> None:
    catalog = load_catalog()
    assert len(catalog.providers) == 14
    for name, provider in catalog.providers.items():
        models = [m for m in catalog.models.values() if m.provider == name]
        assert len(models) >= 2, name
        for model in models:
            assert model.source
            # An embedding model produces no output: its worst case is its input alone.
            assert model.max_output_tokens > 0 if model.kind == "chat" else model.max_output_tokens == 0
            assert model.prices.is_zero() == provider.free, model.id
    assert {n for n, p in catalog.providers.items() if p.free} == {"groq", "nvidia"}



# Any list price: up to 9 decimal places, as a catalog or a fee-scaled price can have.
any_price = st.integers(0, 10**12).flatmap(lambda n: st.integers(0, 9).map(lambda e: Decimal(n).scaleb(-e)))


@given(st.tuples(any_price, any_price, any_price, any_price),
       st.tuples(*(st.integers(0, 10**9),) * 4), st.integers(0, 10_000))
def test_integer_pricing_equals_the_decimal_definition_for_any_prices(
        four: tuple[Decimal, Decimal, Decimal, Decimal], tokens: tuple[int, int, int, int], bps: int) -> None:
    # The definition: the exact Decimal sum rounded half-up once, the fee on it rounded half-up once.
    prices = Prices(*four)
    usage = TokenUsage(*tokens)
    exact = sum((n * p for n, p in zip(tokens, four, strict=True)), Decimal(0))
    cost = round_half_up(exact)
    assert cost_microcents(prices, usage) == cost
    assert fee_microcents(cost, FeePolicy(fee_bps=bps), fee_applies=True) == round_half_up(
        Decimal(cost * bps) / Decimal(10_000))
    dearest = max(four[0], four[2], four[3])
    worst = round_half_up(tokens[0] * dearest + tokens[1] * four[1])
    assert reservation(prices, tokens[0], tokens[1], FeePolicy(), 0).cost_microcents == worst


@given(st.integers(-10**30, 10**30), st.integers(1, 10**20))
def test_integer_half_up_division_rounds_as_the_decimal_rule(numerator: int, denominator: int) -> None:
    with localcontext() as context:
        context.prec = 200  # enough digits that the Decimal quotient is exact where rounding looks
        expected = round_half_up(Decimal(numerator) / Decimal(denominator))
    assert divide_half_up(numerator, denominator) == expected


def test_an_embedding_call_holds_its_request_bytes_at_the_input_price_and_the_fee() -> None:
    small = load_catalog().model("text-embedding-3-small")
    assert small is not None
    # 1,000 bytes × $0.02/MTok = 20 microcents; the fee once deposits pass $100: round_half_up(1.1) = 1.
    assert embedding_reservation(small.prices, 1_000, FeePolicy(), 0).total_microcents == 20
    assert embedding_reservation(small.prices, 1_000, FeePolicy(), 20_000).total_microcents == 21
    # What the call path holds for an embedding model (its output limit is 0) is exactly this rule.
    assert small.max_output_tokens == 0
    assert reservation(small.prices, 12_345, small.max_output_tokens, FeePolicy(), 20_000) == \
        embedding_reservation(small.prices, 12_345, FeePolicy(), 20_000)
