"""USDT-M perpetuals against the emulator with the real ccxt client: leverage and
isolated margin, a position opened and closed with its realised PnL and fees worked by
hand, funding at 00/08/16 UTC, the positionRisk fields ccxt reads, leverage tiers,
funding rates, and the futures refusals."""

from __future__ import annotations

from decimal import Decimal as D

import ccxt
import pytest

from tests.emulator import point_ccxt_at
from tests.emulator.helpers import KEY, SECRET, client, ms

BTC = "BTC/USDT:USDT"
ETH = "ETH/USDT:USDT"
# clock 2023-01-03 00:05: BTC 20200, ETH 1520; futures fees 5 bps taker, 2 bps maker;
# the futures wallet starts at 5000 USDT; funding 0.0001 per 8 h unless told otherwise


def test_open_fund_and_close_a_position_worked_by_hand(emu, ex):
    ex.set_leverage(10, BTC)
    ex.set_margin_mode("isolated", BTC)
    o = ex.create_order(BTC, "market", "buy", 0.1, params={"clientOrderId": "fo-1"})
    assert o["status"] == "closed" and o["average"] == 20200 and o["filled"] == 0.1
    # fee 5 bps of 2020 = 1.01 USDT
    assert emu.futures_wallet("main")["USDT"] == D("5000") - D("1.01")

    (pos,) = ex.fetch_positions([BTC])
    assert (pos["symbol"], pos["side"], pos["contracts"]) == (BTC, "long", 0.1)
    assert pos["entryPrice"] == 20200 and pos["leverage"] == 10
    assert pos["marginMode"] == "isolated" and pos["info"]["marginType"] == "isolated"
    # isolated: wallet 2020 / 10 = 202; liquidation where 202 + 0.1 (P - 20200) equals
    # the maintenance margin 0.4 % of 0.1 P: P = (2020 - 202) / (0.1 * 0.996)
    assert pos["collateral"] == 202 and pos["notional"] == 2020
    assert D(pos["info"]["liquidationPrice"]) == ((D(2020) - 202) / D("0.0996")).quantize(
        D("0.00000001")
    )
    assert pos["liquidationPrice"] == pytest.approx(18253.012, abs=1e-3)

    emu.set_clock("2023-01-04 00:05")  # funding at 01-03 08:00, 16:00 and 01-04 00:00
    history = ex.fetch_funding_history(BTC)
    assert [(h["timestamp"], h["amount"]) for h in history] == [
        (ms("2023-01-03 08:00"), -0.202),  # -0.1 * 20200 * 0.0001: a long pays
        (ms("2023-01-03 16:00"), -0.202),
        (ms("2023-01-04 00:00"), -0.203),  # the mark is the 01-04 open, 20300
    ]
    (pos,) = ex.fetch_positions([BTC])
    assert pos["unrealizedPnl"] == 10 and pos["markPrice"] == 20300

    close = ex.create_order(
        BTC, "market", "sell", 0.1, params={"clientOrderId": "fo-2", "reduceOnly": True}
    )
    assert close["average"] == 20300
    # realised (20300 - 20200) * 0.1 = 10; fee 5 bps of 2030 = 1.015
    wallet = D("5000") - D("1.01") - D("0.607") + D("10") - D("1.015")
    assert emu.futures_wallet("main")["USDT"] == wallet == D("5007.368")
    assert ex.fetch_balance({"type": "future"})["USDT"]["total"] == 5007.368
    assert ex.fetch_positions([BTC]) == []
    trades = ex.fetch_my_trades(BTC)
    assert [
        (t["side"], t["price"], t["fee"]["cost"], t["info"]["realizedPnl"]) for t in trades
    ] == [
        ("buy", 20200, 1.01, "0"),
        ("sell", 20300, 1.015, "10"),
    ]
    income = ex.fapiPrivateGetIncome({"symbol": "BTCUSDT"})
    assert [(i["incomeType"], i["income"]) for i in income] == [
        ("COMMISSION", "-1.01"),
        ("FUNDING_FEE", "-0.202"),
        ("FUNDING_FEE", "-0.202"),
        ("FUNDING_FEE", "-0.203"),
        ("REALIZED_PNL", "10"),
        ("COMMISSION", "-1.015"),
    ]


def test_short_flip_and_funding_received(make_emu):
    emu = make_emu(funding_rates={"ETHUSDT": -0.0005})
    ex = client(emu)
    ex.load_markets()
    ex.create_order(ETH, "market", "sell", 1, params={"clientOrderId": "sf-1"})
    (pos,) = ex.fetch_positions([ETH])
    assert (pos["side"], pos["contracts"], pos["entryPrice"]) == ("short", 1, 1520)
    assert pos["marginMode"] == "cross" and pos["leverage"] == 20
    emu.set_clock("2023-01-03 08:00")  # a negative rate: the short pays 1 * 1520 * 0.0005
    assert ex.fetch_funding_history(ETH)[0]["amount"] == -0.76
    # buy 3 at 1520: closes the short (no PnL) and opens a long of 2
    ex.create_order(ETH, "market", "buy", 3, params={"clientOrderId": "sf-2"})
    (pos,) = ex.fetch_positions([ETH])
    assert (pos["side"], pos["contracts"], pos["entryPrice"]) == ("long", 2, 1520)
    emu.set_clock("2023-01-03 16:00")  # the long receives 2 * 1520 * 0.0005
    assert ex.fetch_funding_history(ETH)[-1]["amount"] == 1.52
    fees = D("1520") * 4 * D("0.0005")
    assert emu.futures_wallet("main")["USDT"] == D(5000) - fees - D("0.76") + D("1.52")
    p = emu.positions("main")["ETHUSDT"]
    assert (p["amt"], p["entry"], p["margin_type"]) == (D(2), D(1520), "CROSSED")


def test_resting_futures_limit_fills_as_maker(emu, ex):
    o = ex.create_order(ETH, "limit", "buy", 1, 1480, params={"clientOrderId": "fl-1"})
    assert o["status"] == "open"
    assert [x["id"] for x in ex.fetch_open_orders(ETH)] == [o["id"]]
    emu.set_clock("2023-01-04 00:05")  # 01-03 low 1470
    t = ex.fetch_my_trades(ETH)[0]
    assert (t["price"], t["takerOrMaker"], t["fee"]["cost"]) == (1480, "maker", 0.296)  # 2 bps
    assert ex.fetch_order(o["id"], ETH)["status"] == "closed"
    o2 = ex.create_order(ETH, "limit", "sell", 1, 1700, params={"clientOrderId": "fl-2"})
    assert ex.cancel_order(o2["id"], ETH)["status"] == "canceled"
    assert [x["clientOrderId"] for x in ex.fetch_closed_orders(ETH)] == ["fl-1"]
    got = ex.fetch_order(None, ETH, params={"origClientOrderId": "fl-2"})
    assert got["status"] == "canceled"


def test_futures_refusals(emu, ex):
    with pytest.raises(ccxt.InsufficientFunds):  # -2019: 10 BTC at 20x needs 10100 USDT
        ex.create_order(BTC, "market", "buy", 10, params={"clientOrderId": "fr-1"})
    with pytest.raises(ccxt.InvalidOrder, match="-4164"):  # notional 20.2 < 100
        ex.create_order(BTC, "market", "buy", 0.001, params={"clientOrderId": "fr-2"})
    with pytest.raises(ccxt.InvalidOrder, match="-2022"):  # nothing to reduce
        ex.create_order(
            BTC, "market", "sell", 0.01, params={"clientOrderId": "fr-3", "reduceOnly": True}
        )
    ex.create_order(BTC, "market", "buy", 0.01, params={"clientOrderId": "fr-4"})
    with pytest.raises(ccxt.InvalidOrder, match="-4116"):
        ex.create_order(BTC, "market", "buy", 0.01, params={"clientOrderId": "fr-4"})
    # one id space per account, spot and futures together
    with pytest.raises(ccxt.InvalidOrder, match="Duplicate"):
        ex.create_order("BTC/USDT", "market", "buy", 0.01, params={"clientOrderId": "fr-4"})
    assert emu.duplicate_attempts == 2
    with pytest.raises(ccxt.BadRequest):
        ex.set_leverage(200, BTC)
    with pytest.raises(ccxt.ExchangeError, match="-4048"):  # a position is open
        ex.set_margin_mode("isolated", BTC)
    with pytest.raises(ccxt.MarginModeAlreadySet):
        ex.set_margin_mode("cross", BTC)
    # without point_ccxt_at's error tables ccxt sees only the common ones
    plain = ccxt.binance({"apiKey": KEY, "secret": SECRET, "enableRateLimit": False})
    point_ccxt_at(plain, emu.url, errors_by_url=False)
    plain.load_markets()
    with pytest.raises(ccxt.ExchangeError) as info:
        plain.create_order(BTC, "market", "buy", 10, params={"clientOrderId": "fr-5"})
    assert type(info.value) is ccxt.ExchangeError


def test_tiers_rates_and_account(emu, ex):
    tiers = ex.fetch_leverage_tiers([BTC])[BTC]
    assert [
        (t["maxLeverage"], t["minNotional"], t["maintenanceMarginRate"]) for t in tiers[:3]
    ] == [
        (125, 0, 0.004),
        (100, 50000, 0.005),
        (75, 600000, 0.0065),
    ]
    assert tiers[1]["info"]["cum"] == 50.0  # 50000 * (0.005 - 0.004)
    assert ex.set_leverage(7, BTC)["leverage"] == 7
    rate = ex.fetch_funding_rate(BTC)
    assert rate["fundingRate"] == 0.0001 and rate["markPrice"] == 20200
    assert rate["fundingTimestamp"] == ms("2023-01-03 08:00")
    hist = ex.fetch_funding_rate_history(BTC, since=ms("2023-01-01 08:00"))
    assert [h["timestamp"] for h in hist][:2] == [ms("2023-01-01 08:00"), ms("2023-01-01 16:00")]
    assert hist[-1]["timestamp"] == ms("2023-01-03 00:00")
    ex.create_order(BTC, "market", "buy", 0.1, params={"clientOrderId": "ta-1"})
    bal = ex.fetch_balance({"type": "future"})
    assert bal["USDT"]["total"] == 5000 - 1.01
    assert bal["USDT"]["used"] == pytest.approx(2020 / 7)
    acc = ex.fapiPrivateV3GetAccount()
    assert acc["positions"][0]["positionAmt"] == "0.1"


def test_isolated_liquidation(make_emu):
    # BTC crashes on 01-04: open 20300, low 15000
    from tests.emulator.helpers import market

    bars = market()
    crash = (bars["symbol"] == "BTCUSDT") & (bars["timestamp"] == "2023-01-04")
    bars.loc[crash, "low"] = 15000.0
    emu = make_emu(data=bars)
    ex = client(emu)
    ex.load_markets()
    ex.set_leverage(10, BTC)
    ex.set_margin_mode("isolated", BTC)
    ex.create_order(BTC, "market", "buy", 0.1, params={"clientOrderId": "lq-1"})
    liq = D(ex.fetch_positions([BTC])[0]["info"]["liquidationPrice"])
    assert liq == D("18253.01204819")
    emu.set_clock("2023-01-05 00:05")
    assert ex.fetch_positions([BTC]) == []
    orders = ex.fetch_orders(BTC)
    assert [(o["clientOrderId"], o["info"]["type"], o["status"]) for o in orders][-1] == (
        f"autoclose-{ms('2023-01-05') - 1}",
        "LIQUIDATION",
        "closed",
    )
    # five fundings were paid out of the isolated margin by the bar's close (01-03 08:00
    # and 16:00 at 20200, 01-04 00:00, 08:00, 16:00 at 20300): 202 - 1.013 left, which
    # moves the liquidation price to (2020 - 200.987) / 0.0996 = 18263.18..., and the
    # fill is at it rounded up to the tick
    t = ex.fetch_my_trades(BTC)[-1]
    assert (t["side"], t["price"], t["amount"]) == ("sell", 18263.19, 0.1)
    # the position loses its whole margin: 1.013 of funding, then the 200.987 left
    assert emu.futures_wallet("main")["USDT"] == D(5000) - D("1.01") - D(202)
    kinds = [i["incomeType"] for i in ex.fapiPrivateGetIncome({"symbol": "BTCUSDT"})][-3:]
    assert kinds == ["REALIZED_PNL", "COMMISSION", "INSURANCE_CLEAR"]


def test_timeout_after_accept_on_a_cancel(emu, ex):
    o = ex.create_order(ETH, "limit", "buy", 1, 1400, params={"clientOrderId": "tc-1"})
    emu.fault("timeout_after_accept", method="DELETE", mode="drop")
    ex.fetch_open_orders(ETH)  # a GET does not meet it
    with pytest.raises(ccxt.NetworkError):
        ex.cancel_order(o["id"], ETH)
    assert ex.fetch_order(o["id"], ETH)["status"] == "canceled"
