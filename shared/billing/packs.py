"""Credit packs: the one place that says what can be bought and for how much."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CreditPack:
    id: str
    credits: int
    price_cents: int
    currency: str = "usd"


CREDIT_PACKS: tuple[CreditPack, ...] = (
    CreditPack("credits_100", 100, 900),
    CreditPack("credits_500", 500, 3900),
    CreditPack("credits_2000", 2000, 12900),
)

PACKS_BY_ID = {pack.id: pack for pack in CREDIT_PACKS}
PACKS_BY_CREDITS = {pack.credits: pack for pack in CREDIT_PACKS}
