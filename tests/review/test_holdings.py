"""Holdings files: both formats parse to the same thing; every mistake gets a clear message."""

from __future__ import annotations

from pathlib import Path

import pytest

from trimtab.review import HoldingsError, load_holdings, parse_holdings, resolve_holdings
from trimtab.review.holdings import market_symbol

from .conftest import EXAMPLES, yaml_holdings


def _err(text: str, fmt: str = "yaml") -> str:
    with pytest.raises(HoldingsError) as info:
        parse_holdings(text, fmt, source="my.holdings")  # type: ignore[arg-type]
    message = str(info.value)
    assert message.startswith("my.holdings"), message  # always names the file
    return message


def test_examples_parse_and_agree():
    y = load_holdings(EXAMPLES / "holdings.yaml")
    c = load_holdings(EXAMPLES / "holdings.csv")
    assert y.source.endswith("holdings.yaml") and c.source.endswith("holdings.csv")
    assert str(y.as_of) == str(c.as_of) == "2023-06-30"
    assert y.subaccounts.keys() == c.subaccounts.keys() == {"core", "momentum"}
    for name in y.subaccounts:
        assert y.subaccounts[name].model_dump() == c.subaccounts[name].model_dump()
    perp = y.subaccounts["momentum"].perps[0]
    assert (perp.symbol, perp.side, perp.size, perp.leverage) == ("DOGEUSDT", "long", 300000, 12)
    # Default margin: size * entry / leverage.
    assert perp.effective_margin == pytest.approx(300000 * 0.066 / 12)


def test_yaml_shorthand_spot_entries_and_margin_defaults():
    h = yaml_holdings(
        """
cash: {usdt: 100}
spot:
  btc: 0.5
  ETH/USDT: {quantity: 2, entry_price: 1500}
perps:
  - {symbol: BTC/USDT:USDT, side: SHORT, size: 0.1, entry_price: 20000, margin: 500}
"""
    )
    sub = h.subaccounts["main"]
    assert sub.cash == {"USDT": 100}
    assert sub.spot["BTC"].quantity == 0.5 and sub.spot["BTC"].entry_price is None
    assert sub.spot["ETH/USDT"].entry_price == 1500
    perp = sub.perps[0]
    assert perp.side == "short" and perp.margin_mode == "isolated"
    assert perp.effective_leverage == pytest.approx(4.0)  # 2,000 notional on 500 margin
    assert market_symbol("BTC/USDT:USDT", ["BTCUSDT"]) == "BTCUSDT"
    assert market_symbol("DOGEUSDT-PERP", ["DOGEUSDT"]) == "DOGEUSDT"
    assert market_symbol("AR", ["ARBUSD"]) == "ARBUSD"  # a BUSD pair when no USDT pair
    assert market_symbol("XYZ", ["BTCUSDT"]) is None


def test_csv_rows_add_up_and_as_of_comment():
    h = parse_holdings(
        "# as_of: 2022-05-09\n"
        "subaccount,kind,asset,quantity,entry_price\n"
        "a,cash,USDT,100,\n"
        "a,cash,usdt,50,\n"
        "a,spot,BTC,1,30000\n"
        "a,spot,BTC,1,40000\n",
        "csv",
        source="x.csv",
    )
    sub = h.subaccounts["a"]
    assert sub.cash == {"USDT": 150}
    assert sub.spot["BTC"].quantity == 2 and sub.spot["BTC"].entry_price == 35000
    assert str(h.as_of) == "2022-05-09"


PERP = "subaccounts:\n  m:\n    cash: {{USDT: 10}}\n    perps:\n      - {{{fields}}}\n"
GOOD = "symbol: DOGEUSDT, side: long, size: 1000, entry_price: 0.07, leverage: 10"


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (
            GOOD.replace("size: 1000", "size: -5"),
            "subaccounts.m.perps[0].size: Input should be greater than 0 (got -5)",
        ),
        (
            GOOD.replace("leverage: 10", "leverage: 0.5"),
            "subaccounts.m.perps[0].leverage: Input should be greater than or equal to 1 (got 0.5)",
        ),
        (
            GOOD.replace("side: long", "side: up"),
            "subaccounts.m.perps[0].side: Input should be 'long' or 'short' (got 'up')",
        ),
        (
            GOOD.replace(", entry_price: 0.07", ""),
            "subaccounts.m.perps[0].entry_price: required but missing",
        ),
        (
            GOOD.replace("leverage: 10", "levrage: 10"),
            "subaccounts.m.perps[0].levrage: unknown field 'levrage'; allowed: symbol, side, size",
        ),
        (GOOD.replace(", leverage: 10", ""), "subaccounts.m.perps[0]: give leverage or margin"),
        (
            GOOD.replace("size: 1000", "size: lots"),
            "subaccounts.m.perps[0].size: Input should be a valid number",
        ),
        (
            GOOD + ", margin_mode: portfolio",
            "subaccounts.m.perps[0].margin_mode: Input should be 'isolated' or 'cross'",
        ),
    ],
)
def test_bad_perp_fields(fields: str, expected: str):
    assert expected in _err(PERP.format(fields=fields))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "subaccounts: {a: {spot: {BTC: -1}}}",
            "subaccounts.a.spot.BTC.quantity: Input should be greater than or equal to 0 (got -1)",
        ),
        (
            "subaccounts: {a: {cash: {USDT: -5}}}",
            "subaccounts.a.cash.USDT: Input should be greater than or equal to 0 (got -5)",
        ),
        (
            "subaccounts: {a: {spot: {BTC: .nan}}}",
            "subaccounts.a.spot.BTC.quantity: Input should be a finite number",
        ),
        (
            "subaccounts: {a: {stocks: {AAPL: 1}}}",
            "subaccounts.a.stocks: unknown field 'stocks'; allowed: exchange, cash, spot, perps",
        ),
        (
            "subaccounts: {a: {spot: [BTC]}}",
            "subaccounts.a.spot: Input should be a valid dictionary",
        ),
        (
            "subaccounts: {a: {spot: {BTC: 1, btc: 2}}}",
            "subaccounts.a.spot: Value error, BTC is listed twice".replace("Value error, ", ""),
        ),
        ("portfolio: {}", "subaccounts: required but missing\n  - portfolio: unknown field"),
        ("as_of: June\nsubaccounts: {a: {cash: {USDT: 1}}}", "as_of: cannot read 'June' as a date"),
        ("as_of: 2023\nsubaccounts: {a: {cash: {USDT: 1}}}", "as_of: write as_of as a date"),
        ("subaccounts: {}", "subaccounts: no subaccounts"),
        ("subaccounts:\n  a: {cash: {USDT: 1}\n", "not valid YAML at line"),
        ("subaccounts:\n  a: {}\n  a: {}\n", "duplicate key 'a'"),
        ("- BTC\n- ETH\n", "expected a mapping with 'subaccounts'"),
        ("", "the file is empty"),
    ],
)
def test_bad_yaml(text: str, expected: str):
    assert expected in _err(text)


def test_unknown_top_level_field_names_allowed_ones():
    msg = _err("asof: 2023-01-01\nsubaccounts: {a: {cash: {USDT: 1}}}")
    assert "asof: unknown field 'asof'; allowed: as_of, subaccounts" in msg


def test_several_problems_are_listed_together():
    msg = _err("subaccounts: {a: {spot: {BTC: -1, ETH: -2}}}")
    assert "2 problems" in msg and "spot.BTC" in msg and "spot.ETH" in msg


HEADER = "subaccount,kind,asset,quantity,side,entry_price,leverage,margin_mode,margin\n"


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ("a,perp,DOGEUSDT,1000,long,,10,,\n", "row 2, column entry_price: required but missing"),
        (
            "a,perp,DOGEUSDT,1000,long,0.07,0.5,,\n",
            "row 2, column leverage: Input should be greater than or equal to 1 (got '0.5')",
        ),
        (
            "a,perp,DOGEUSDT,-3,long,0.07,5,,\n",
            "row 2, column quantity: Input should be greater than 0",
        ),
        (
            "a,perp,DOGEUSDT,3,sideways,0.07,5,,\n",
            "row 2, column side: Input should be 'long' or 'short'",
        ),
        ("a,perp,DOGEUSDT,3,long,0.07,,,\n", "row 2: give leverage or margin"),
        ("a,future,BTC,1,,,,,\n", "row 2, column kind: must be cash, spot or perp (got 'future')"),
        ("a,spot,BTC,-1,,,,,\n", "row 2, column quantity: must be >= 0 (got '-1')"),
        ("a,spot,BTC,many,,,,,\n", "row 2, column quantity: not a number (got 'many')"),
        ("a,spot,BTC,1,short,,,,\n", "row 2: side is only for perp rows"),
        ("a,cash,USDT,1,,,3,,\n", "row 2: leverage is only for perp rows"),
        (",spot,BTC,1,,,,,\n", "row 2, column subaccount: empty; it is required"),
        ("a,spot,BTC,1\n", "row 2: 4 cells but the header has 9 columns"),
    ],
)
def test_bad_csv_rows(rows: str, expected: str):
    assert expected in _err(HEADER + rows, "csv")


def test_bad_csv_header_and_empty():
    assert "unknown column(s) 'price'" in _err("subaccount,kind,asset,quantity,price\n", "csv")
    assert "missing column(s) quantity" in _err("subaccount,kind,asset\n", "csv")
    assert "header but no holdings" in _err(HEADER, "csv")
    assert "no header and no rows" in _err("# just a comment\n", "csv")


def test_load_holdings_file_errors(tmp_path: Path):
    with pytest.raises(HoldingsError, match="does not exist"):
        load_holdings(tmp_path / "nope.yaml")
    bad = tmp_path / "h.toml"
    bad.write_text("x = 1")
    with pytest.raises(HoldingsError, match=r"h\.toml: unknown holdings format '\.toml'"):
        load_holdings(bad)
    y = tmp_path / "h.yaml"
    y.write_text("subaccounts: {a: {spot: {BTC: -1}}}")
    with pytest.raises(HoldingsError, match=r"h\.yaml: subaccounts\.a\.spot\.BTC\.quantity"):
        load_holdings(y)
    assert issubclass(HoldingsError, ValueError)  # the CLI shows ValueErrors as one line


# --------------------------------------------------------------------------- vs the data


def _resolve_err(text: str, panel, fmt: str = "yaml", **kw) -> str:
    h = parse_holdings(text, fmt, source="my.holdings")  # type: ignore[arg-type]
    with pytest.raises(HoldingsError) as info:
        resolve_holdings(h, panel, **kw)
    return str(info.value)


def test_symbols_and_dates_checked_against_the_data(daily_panel):
    msg = _resolve_err("subaccounts: {a: {spot: {FOO: 1}}}", daily_panel)
    assert "my.holdings: subaccounts.a.spot.FOO: spot asset 'FOO' is not in the market data" in msg
    assert "available: AAVEUSDT" in msg
    msg = _resolve_err(PERP.format(fields=GOOD.replace("DOGEUSDT", "PEPEUSDT")), daily_panel)
    assert "subaccounts.m.perps[0].symbol: perpetual 'PEPEUSDT' is not in the market data" in msg
    msg = _resolve_err("subaccounts: {a: {spot: {ETHBTC: 1}}}", daily_panel)
    assert "pairs quoted in BTC are not supported" in msg
    msg = _resolve_err("as_of: 2019-05-01\nsubaccounts: {a: {spot: {SOL: 1}}}", daily_panel)
    assert "subaccounts.a.spot.SOL: SOLUSDT has no price at 2019-05-01" in msg
    assert "2020-08-11 to 2023-12-31" in msg
    msg = _resolve_err("as_of: 2030-01-01\nsubaccounts: {a: {spot: {BTC: 1}}}", daily_panel)
    assert "my.holdings: as_of 2030-01-01 is after the market data ends" in msg
    msg = _resolve_err("as_of: 2015-01-01\nsubaccounts: {a: {spot: {BTC: 1}}}", daily_panel)
    assert "as_of 2015-01-01 is before the market data starts" in msg
    msg = _resolve_err("subaccounts: {a: {cash: {EUR: 100}}}", daily_panel)
    assert "subaccounts.a.cash.EUR: cash in EUR has no price in the market data" in msg
    msg = _resolve_err(HEADER + "a,spot,FOO,1,,,,,\n", daily_panel, "csv")
    assert "my.holdings: row 2: spot asset 'FOO' is not in the market data" in msg
    msg = _resolve_err("subaccounts: {a: {cash: {USDT: 0}}}", daily_panel)
    assert "the holdings are empty" in msg


def test_as_of_picks_the_bar_and_argument_overrides(daily_panel):
    h = yaml_holdings(
        "as_of: 2023-06-30\nsubaccounts: {a: {spot: {BTC: 1}, cash: {USDC: 5, BTC: 0.5}}}"
    )
    book = resolve_holdings(h, daily_panel)
    assert str(book.bar) == "2023-06-30 00:00:00+00:00"  # the daily bar of that date
    assert book.cash == {"a": 5.0}  # USDC at 1 USDT
    # BTC held as cash is a BTC position, priced on BTCUSDT.
    assert [(p.symbol, p.quantity, p.section) for p in book.positions] == [
        ("BTCUSDT", 0.5, "cash"),
        ("BTCUSDT", 1.0, "spot"),
    ]
    assert str(resolve_holdings(h, daily_panel, as_of="2022-05-09").bar).startswith("2022-05-09")
    assert (
        resolve_holdings(yaml_holdings("subaccounts: {a: {spot: {BTC: 1}}}"), daily_panel).bar
        == (daily_panel.index[-1])
    )
    with pytest.raises(HoldingsError, match="^as_of 2031-01-01 is after"):
        resolve_holdings(h, daily_panel, as_of="2031-01-01")
