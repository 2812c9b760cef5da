"""Fit the parameters of trimtab's synthetic sample market to the real data, once.

``src/trimtab/data/sample.py`` hard-codes what this prints (the real files may not be
redistributed, so the package ships only these constants). Run it again only to refit:

    uv run python bench/fit_sample_market.py [--data ../shared/data]

Daily model (log returns of close prices, 2017-08-17 to 2023-12-31, Binance spot):

- market factor: BTCUSDT's daily log return, GARCH(1,1) with Student-t innovations and a
  constant mean (``arch``, maximum likelihood, returns in percent);
- each other coin: OLS of its log return on the factor (intercept ``mu``, ``beta``),
  then GARCH(1,1)-t with zero mean on the residual;
- ranges: ``k_range`` scales the conditional daily volatility used for the Brownian
  extremes of each bar, so that the mean Parkinson variance matches the real mean
  close-to-close variance ratio;
- volumes: pooled OLS of the demeaned log quote volume on the demeaned log conditional
  volatility and the absolute standardized return, AR(1) residual;
- trades: median quote volume per trade;
- spreads: half of the mean Abdi-Ranaldo spread estimate (30-day window) per coin, printed
  to compare the sample with (its estimate on the sample's bars should land in the same
  range); the sample's true half-spreads are assumed, not fitted (see sample.py): on daily
  bars the estimate is dominated by volatility, not by the quoted spread.

Hourly model (BTC, ETH, BNB, ADA, 2017-08 to 2021-06): the intraday profile of mean
squared hourly returns (24 fractions of the day's variance), and the Student-t degrees
of freedom of hourly returns standardized by the day's realized volatility.

Funding (Binance BTCUSDT and ETHUSDT, 8-hourly, 2020-2022): AR(1) of the rate with a
loading on the trailing 7-day log return of the coin.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from arch import arch_model

from trimtab.signals.liquidity import abdi_ranaldo_spread

DAILY = "ohlcv_1d_binance_spot_34coins_2017-2023.csv.gz"
HOURLY = "ohlcv_1h_binance_spot_BTC_ETH_BNB_ADA_2017-2021.csv.gz"
FUNDING = "funding_BTC_ETH_7venues_2020-2022.csv.gz"
COINS = (
    "BTCUSDT ETHUSDT BNBUSDT XRPUSDT ADAUSDT SOLUSDT DOGEUSDT LTCUSDT LINKUSDT DOTUSDT "
    "AVAXUSDT MATICUSDT TRXUSDT XLMUSDT AAVEUSDT FILUSDT UNIUSDT ATOMUSDT BCHUSDT ETCUSDT "
    "EOSUSDT XMRUSDT ZRXUSDT ARBUSD IOTAUSDT"
).split()


def garch_t(x: pd.Series, mean: str) -> dict[str, float]:
    """GARCH(1,1)-t on ``x`` (percent); omega in percent squared."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = arch_model(x, mean=mean, vol="GARCH", p=1, q=1, dist="t", rescale=False).fit(
            disp="off"
        )
    p = res.params
    return {
        "mu": float(p.get("mu", 0.0)),
        "omega": float(p["omega"]),
        "alpha": float(p["alpha[1]"]),
        "beta": float(p["beta[1]"]),
        "nu": float(p["nu"]),
        "sigma": res.conditional_volatility,  # type: ignore[dict-item]
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data"))
    data = Path(parser.parse_args().data)

    bars = pd.read_csv(data / DAILY, parse_dates=["timestamp"])
    bars = bars[bars.symbol.isin(COINS)]
    wide = {f: bars.pivot(index="timestamp", columns="symbol", values=f) for f in bars.columns[2:9]}
    close, high, low = wide["close"], wide["high"], wide["low"]
    qv, trades = wide["volume_quote"], wide["trades"]
    r = np.log(close).diff() * 100  # percent log returns
    m = r["BTCUSDT"]

    fm = garch_t(m.dropna(), "Constant")
    print("# market factor (BTCUSDT daily log return, %): GARCH(1,1)-t")
    print(
        f"MARKET = dict(mu={fm['mu']:.4f}, omega={fm['omega']:.4f}, alpha={fm['alpha']:.4f}, "
        f"beta={fm['beta']:.4f}, nu={fm['nu']:.2f})"
    )
    sigma = pd.DataFrame(index=r.index, columns=r.columns, dtype=float)
    sigma["BTCUSDT"] = fm["sigma"]
    # omega is printed for the record; the sample sets it from the residual variance
    # (``var``), because many fits sit at alpha + beta = 1 where the unconditional
    # variance is infinite.
    print("# coin: (mu %/day, beta, resid var, alpha, garch beta, nu, first close, median qv)")
    rows = {}
    for s in COINS:
        first_close = float(close[s].dropna().iloc[0])
        med_qv = float(qv[s].median())
        if s == "BTCUSDT":
            rows[s] = (
                0.0,
                1.0,
                float(m.var()),
                fm["alpha"],
                fm["beta"],
                fm["nu"],
                first_close,
                med_qv,
            )
            continue
        both = pd.concat([r[s], m], axis=1).dropna()
        y, x = both.iloc[:, 0], both.iloc[:, 1]
        beta, mu = np.polyfit(x, y, 1)
        resid = y - mu - beta * x
        f = garch_t(resid, "Zero")
        total = np.sqrt(beta**2 * fm["sigma"].reindex(resid.index) ** 2 + f["sigma"] ** 2)
        sigma.loc[resid.index, s] = total
        rows[s] = (
            mu,
            beta,
            float(resid.var()),
            f["alpha"],
            f["beta"],
            f["nu"],
            first_close,
            med_qv,
        )
    for s, v in rows.items():
        print(
            f'    "{s}": ({v[0]:.4f}, {v[1]:.3f}, {v[2]:.4f}, {v[3]:.4f}, {v[4]:.4f}, {v[5]:.2f}, '
            f"{v[6]:.6g}, {v[7]:.4g}),"
        )
    alts = np.array([v[:6] for s, v in rows.items() if s != "BTCUSDT"])
    print("# median alt (mu, beta, resid var, alpha, beta, nu):", np.round(np.median(alts, 0), 4))

    # Ranges: Parkinson variance against squared close-to-close returns (robust: medians
    # of per-coin means, trimmed of the worst wicks).
    park = (np.log(high / low) * 100) ** 2 / (4 * np.log(2))
    ratio = []
    for s in COINS:
        pv = park[s].dropna()
        pv = pv[pv < pv.quantile(0.99)]
        ratio.append(pv.mean() / (sigma[s].dropna() ** 2).mean())
    print(f"K_RANGE = {np.sqrt(np.median(ratio)):.3f}  # sqrt(median Parkinson / GARCH variance)")

    # Volumes: pooled regression of demeaned log quote volume.
    z = r / sigma
    ys, xs1, xs2, us = [], [], [], []
    for s in COINS:
        frame = pd.concat(
            [np.log(qv[s]), np.log(sigma[s]), z[s].abs()], axis=1, keys=["y", "ls", "az"]
        ).dropna()
        frame = frame[np.isfinite(frame).all(axis=1)]
        ys.append(frame.y - frame.y.mean())
        xs1.append(frame.ls - frame.ls.mean())
        xs2.append(frame.az - frame.az.mean())
    y, x1, x2 = (pd.concat(v).to_numpy() for v in (ys, xs1, xs2))
    coef, *_ = np.linalg.lstsq(np.column_stack([x1, x2]), y, rcond=None)
    start = 0
    for v in ys:  # AR(1) of the residual per coin, pooled
        n = len(v)
        u = y[start : start + n] - coef[0] * x1[start : start + n] - coef[1] * x2[start : start + n]
        us.append(u)
        start += n
    num = sum(float(np.dot(u[1:], u[:-1])) for u in us)
    den = sum(float(np.dot(u[:-1], u[:-1])) for u in us)
    phi = num / den
    innov = np.concatenate([u[1:] - phi * u[:-1] for u in us])
    print(
        f"VOLUME = dict(vol_elasticity={coef[0]:.3f}, abs_z={coef[1]:.3f}, ar1={phi:.3f}, "
        f"noise={innov.std():.3f})"
    )
    per_trade = (qv / trades).median().median()
    print(f"QUOTE_PER_TRADE = {per_trade:.0f}  # median USDT per trade")

    # Spreads: half the median Abdi-Ranaldo estimate, against log median quote volume.
    # the mean, as the estimator is floored at zero on most days of liquid coins
    ar = abdi_ranaldo_spread(high[COINS], low[COINS], close[COINS], window=30).mean() / 2
    print(f"# Abdi-Ranaldo half-spread, median over coins: {ar.median():.1f} bps")
    print("# per coin:", ar.round(1).to_dict())

    # Hourly: intraday variance profile and the tails of standardized hourly returns.
    h = pd.read_csv(data / HOURLY, parse_dates=["timestamp"])
    hc = h.pivot(index="timestamp", columns="symbol", values="close")
    hr = np.log(hc).diff()
    day = hr.index.floor("D")
    rv = (hr**2).groupby(day).transform("sum")
    share = ((hr**2) / rv).groupby(hr.index.hour).mean().mean(axis=1)
    share = share / share.sum()
    print("INTRADAY = (" + ", ".join(f"{v:.4f}" for v in share) + ")")
    zh = (hr / np.sqrt(rv * share.reindex(hr.index.hour).to_numpy()[:, None])).stack()
    zh = zh[np.isfinite(zh)]
    kurt = float(((zh - zh.mean()) ** 4).mean() / zh.var() ** 2)
    nu_h = 4 + 6 / max(kurt - 3, 0.1)  # method of moments: kurtosis 3 + 6/(nu-4)
    print(f"HOURLY_NU = {nu_h:.2f}  # kurtosis {kurt:.2f} of hourly returns / day RV")

    # Funding: AR(1) with a loading on the trailing 7-day log return.
    f = pd.read_csv(data / FUNDING, parse_dates=["timestamp"])
    f = f[f.venue == "binance"]
    for s in ("BTCUSDT", "ETHUSDT"):
        x = f[f.symbol == s].set_index("timestamp").funding_rate.sort_index()
        d = np.log(close[s]).diff(7)
        trail = d.reindex(x.index.floor("D") - pd.Timedelta(days=1)).to_numpy()
        frame = pd.DataFrame({"y": x.to_numpy()[1:], "lag": x.to_numpy()[:-1], "t": trail[1:]})
        frame = frame.dropna()
        design = np.column_stack([np.ones(len(frame)), frame.lag, frame.t])
        c, *_ = np.linalg.lstsq(design, frame.y, rcond=None)
        res = frame.y - design @ c
        print(
            f'FUNDING["{s}"] = dict(const={c[0]:.3e}, ar1={c[1]:.3f}, trend={c[2]:.3e}, '
            f"noise={res.std():.3e})"
        )


if __name__ == "__main__":
    main()
