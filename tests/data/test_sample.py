"""The synthetic sample market: deterministic, in the readers' format, clean, with the
stylized facts of crypto returns, and labelled synthetic wherever it is used.

Figures for the real daily file, from the same measures (bench/fit_sample_market.py's
source): median kurtosis of daily log returns 14.7, median lag-1 autocorrelation of
absolute returns 0.22, mean pairwise correlation 0.59, median Abdi-Ranaldo half-spread
estimate 56 bps. The sample: 11.8, 0.14, 0.57, 42 bps.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from trimtab.data import load_panel, read_funding, read_shared_csv, sample, validate_bars
from trimtab.data.resample import resample_panel
from trimtab.signals.liquidity import abdi_ranaldo_spread

UTC = "UTC"


@pytest.fixture(scope="session")
def folder():
    return sample.ensure_sample()


@pytest.fixture(scope="session")
def daily(folder):
    return load_panel(folder / sample.DAILY_FILE)


@pytest.fixture(scope="session")
def returns(daily):
    return np.log(daily.close).diff()


def test_same_seed_same_bytes_other_seed_other_market(tmp_path):
    a, b = sample.generate(), sample.generate()
    for x, y in zip(a, b, strict=True):
        pd.testing.assert_frame_equal(x, y)
    sample._write_csv(tmp_path / "a.csv.gz", a.daily)
    sample._write_csv(tmp_path / "b.csv.gz", b.daily)
    assert (tmp_path / "a.csv.gz").read_bytes() == (tmp_path / "b.csv.gz").read_bytes()
    other = sample.generate(seed=sample.SEED + 1)
    assert not np.allclose(other.daily["close"], a.daily["close"])


def test_the_cached_files_are_what_the_generator_writes(folder):
    # The folder tests and the CLI use holds exactly the seed's market.
    raw = read_shared_csv(folder / sample.DAILY_FILE)
    market = sample.generate()
    assert len(raw) == len(market.daily)
    np.testing.assert_allclose(raw["close"], market.daily["close"], rtol=1e-7)
    stamp = json.loads((folder / sample.STAMP).read_text())
    assert stamp["synthetic"] is True and stamp["parameters"] == sample.parameters_digest()
    readme = (folder / "README.md").read_text()
    assert "SYNTHETIC" in readme and "trimtab data download" in readme


def test_passes_trimtabs_own_validation_with_zero_issues(folder, daily):
    hourly = load_panel(folder, timeframe="1h")
    for panel in (daily, hourly):
        assert panel.provenance["issues"] == {"errors": 0, "warnings": 0}
    for name, tf in ((sample.DAILY_FILE, "1d"), (sample.HOURLY_FILE, "1h")):
        _, issues = validate_bars(read_shared_csv(folder / name), source=name, timeframe=tf)
        assert issues == []
    live = daily.has_bar.to_numpy()
    hi, lo, op, cl, qv = (
        getattr(daily, f).to_numpy()[live] for f in ("high", "low", "open", "close", "quote_volume")
    )
    assert (hi >= np.maximum(op, cl)).all() and (lo <= np.minimum(op, cl)).all()
    assert (lo > 0).all() and (qv > 0).all() and np.isfinite(hi).all()
    # Opens are the previous close, as on a 24/7 exchange.
    both = live[1:] & live[:-1]
    assert (daily.open.to_numpy()[1:][both] == daily.close.to_numpy()[:-1][both]).all()


def test_fat_tails_volatility_clustering_and_a_common_factor(returns):
    kurt = returns.kurt() + 3  # pandas gives excess kurtosis
    assert (kurt > 3).all() and kurt.median() > 6
    acf = pd.Series({c: returns[c].abs().autocorr(1) for c in returns})
    assert (acf > 0).all() and acf.median() > 0.08
    corr = returns.corr().to_numpy()
    mean_corr = np.nanmean(corr[np.triu_indices_from(corr, 1)])
    assert 0.4 < mean_corr < 0.75  # the real file: 0.59
    vol = returns.std() * np.sqrt(365)
    assert 0.4 < vol.median() < 1.6  # annualised; the real file: 1.17


def test_listings_and_delistings_at_different_dates(daily):
    first = daily.close.apply(lambda s: s.first_valid_index())
    last = daily.close.apply(lambda s: s.last_valid_index())
    assert first.nunique() >= 15 and first.min() == pd.Timestamp(sample.START, tz=UTC)
    gone = last[last < daily.index[-1]]
    assert gone.to_dict() == {
        "ARBUSD": pd.Timestamp("2023-10-20", tz=UTC),
        "FTTUSDT": pd.Timestamp("2022-11-14", tz=UTC),
        "IOTAUSDT": pd.Timestamp("2022-09-30", tz=UTC),
    }
    # Not listed means no price at all: nothing before the listing, nothing after.
    assert daily.close.loc[:"2020-08-10", "SOLUSDT"].isna().all()
    assert daily.close.loc["2022-11-15":, "FTTUSDT"].isna().all()
    ftt = daily.close["FTTUSDT"].dropna()
    assert ftt.iloc[-1] / ftt.iloc[-8] < 0.2  # its collapse before the delisting


def test_volumes_rise_with_volatility_and_rank_by_size(daily, returns):
    lv = np.log(daily.quote_volume.where(daily.has_bar))
    corr = pd.Series({c: lv[c].corr(returns[c].abs()) for c in returns})
    assert corr.median() > 0.1
    median = daily.quote_volume.where(daily.has_bar).median()
    assert median["BTCUSDT"] > median["ETHUSDT"] > median["ZRXUSDT"]


def test_spreads_estimated_from_the_bars_look_like_the_real_ones(daily):
    half = abdi_ranaldo_spread(daily.high, daily.low, daily.close, window=30).mean() / 2
    assert 15 < half.median() < 120  # bps; the real daily file gives 56


def test_hourly_bars_aggregate_to_the_daily_bars(folder, daily):
    hourly = load_panel(folder, timeframe="1h")
    assert hourly.symbols == ["ADAUSDT", "BNBUSDT", "BTCUSDT", "ETHUSDT"]
    d = resample_panel(hourly, "1d")
    window = d.index[(d.index >= "2020-08-02") & (d.index <= sample.HOURLY_END)]
    for field in ("open", "high", "low", "close"):
        pd.testing.assert_frame_equal(
            getattr(d, field).loc[window], getattr(daily, field).loc[window, d.symbols]
        )
    np.testing.assert_allclose(
        d.quote_volume.loc[window], daily.quote_volume.loc[window, d.symbols], rtol=1e-6
    )
    hr = np.log(hourly.close["BTCUSDT"]).diff().dropna()
    assert hr.kurt() > 1 and hr.abs().autocorr(1) > 0.05


def test_funding_rates_read_and_persist(folder):
    f = read_funding(folder / sample.FUNDING_FILE)
    assert sorted(f["symbol"].unique()) == ["BTCUSDT", "ETHUSDT"]
    btc = f[f.symbol == "BTCUSDT"].set_index("timestamp")["funding_rate"]
    assert (btc.index.to_series().diff().dropna() == pd.Timedelta(hours=8)).all()
    assert btc.abs().max() <= sample.FUNDING_CAP and 0 < btc.mean() < 5e-4
    assert btc.autocorr(1) > 0.5


def test_backtest_and_demo_on_the_sample_say_so(tmp_path, monkeypatch, folder):
    from trimtab import cli
    from trimtab.data import discovery

    monkeypatch.setattr(discovery, "project_root", lambda start=None: None)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TRIMTAB_DATA", raising=False)
    monkeypatch.setattr(sample, "sample_dir", lambda env=None: folder)
    monkeypatch.setattr(cli, "DEMO_START", "2023-06-01")  # a short demo
    runner = CliRunner()
    result = runner.invoke(cli.app, ["demo", "--out", str(tmp_path / "demo")])
    assert result.exit_code == 0, result.output
    assert "SYNTHETIC sample market" in result.output
    assert "trimtab data download" in result.output
    doc = json.loads((tmp_path / "demo" / "result.json").read_text())
    assert doc["data"]["synthetic"] is True and doc["data"]["source"] == "synthetic sample"
    assert doc["data"]["location"]["how"] == "sample"
    where = runner.invoke(cli.app, ["data", "where"])
    assert where.exit_code == 0 and "(chosen by sample)" in where.output
    assert "SYNTHETIC" in where.output
    # Named explicitly, it is still labelled.
    result = runner.invoke(
        cli.app,
        [
            "backtest",
            "--data",
            str(folder),
            "--symbols",
            "BTCUSDT,ETHUSDT",
            "--start",
            "2023-09-01",
        ],
    )
    assert result.exit_code == 0 and "SYNTHETIC" in result.output
