import re

import pytest

from trimtab.config import (
    ConfigError,
    TrimtabConfig,
    example_yaml,
    load_config,
    parse_config,
)
from trimtab.guard.breakers import BreakerConfig
from trimtab.guard.limits import Limits
from trimtab.policy.governor import GovernorSettings
from trimtab.policy.policies import SizingSettings
from trimtab.policy.rebalance import CostAwareSettings


def test_no_file_is_the_default_configuration():
    cfg = TrimtabConfig()
    assert cfg.limits == Limits() and cfg.breakers == BreakerConfig()
    assert cfg.governor.schedule == ((0.25, 0.75), (0.35, 0.50), (0.45, 0.25))
    assert cfg.governor.recovery_bars == 20 and cfg.governor.interpolate is True
    assert cfg.sizing == SizingSettings() and cfg.clusters == {}
    assert cfg.rebalance == CostAwareSettings() and cfg.governor == GovernorSettings()


@pytest.mark.parametrize("text", ["", "# nothing\n", "limits:\nbreakers:\n"])
def test_empty_file_or_sections_take_the_defaults(text):
    assert parse_config(text) == TrimtabConfig()


def test_the_documented_example_parses(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(example_yaml())
    cfg = load_config(path)
    assert cfg.limits.max_asset_weight == 0.40
    assert cfg.limits.max_order_notional == 50_000
    assert cfg.limits.allowed_symbols == ("BTC/USDT", "ETH/USDT", "SOL/USDT", "BNB/USDT")
    assert cfg.limits.allowed_venues == ("binance",)
    assert cfg.limits.max_drawdown == 0.35
    assert cfg.breakers.auto_resume is False and cfg.breakers.cooldown == 5
    assert cfg.cluster_map() == {"ETH/USDT": "layer1", "SOL/USDT": "layer1", "BNB/USDT": "layer1"}
    # Every key the documented example shows exists, and the defaults it states are true.
    assert set(cfg.limits.model_fields_set) == set(Limits.model_fields)
    assert cfg.breakers == BreakerConfig()
    assert cfg.governor == GovernorSettings()
    assert set(cfg.governor.model_fields_set) == set(GovernorSettings.model_fields)
    assert cfg.sizing == SizingSettings()
    assert set(cfg.sizing.model_fields_set) == set(SizingSettings.model_fields)


def test_errors_name_the_file_and_the_key_path(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(
        "limits:\n"
        "  max_asset_weight: -0.1\n"
        "  max_drawdown: 1.5\n"
        "  max_gross_leverage: .nan\n"
        "  max_cluster_wieght: 0.3\n"
        "breakers:\n"
        "  cooldown: soon\n"
        "  resume_conditions: [data_fresh, moon]\n"
        "governor:\n"
        "  schedule: [[0.2, 0.5], [0.1, 0.4]]\n"
        "backtest: {}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    err = info.value
    assert isinstance(err, ValueError) and str(path) in str(err)
    lines = err.problems
    assert "limits.max_asset_weight: must be > 0 (got -0.1)" in lines
    assert "limits.max_drawdown: must be < 1 (got 1.5)" in lines
    assert any(x.startswith("limits.max_gross_leverage: must be a finite number") for x in lines)
    assert any(
        x.startswith("limits.max_cluster_wieght: unknown key; allowed keys: max_gross_leverage")
        for x in lines
    )
    assert "breakers.cooldown: must be a whole number (got 'soon')" in lines
    assert any(x.startswith("breakers.resume_conditions[1]: must be one of") for x in lines)
    assert any(x.startswith("governor.schedule: drawdowns must increase") for x in lines), lines
    assert any(x.startswith("backtest: unknown key; allowed keys: limits") for x in lines)
    assert len(lines) == 8


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ([[0.1, 0.5], [0.2, 0.6]], "must not increase"),
        ([[0.0, 0.5]], "drawdown must be in (0, 1)"),
        ([[0.1, 1.5]], "ceiling must be in [0, 1]"),
        ([[0.1, 0.5], [0.1, 0.4]], "drawdowns must increase"),
    ],
)
def test_governor_schedule_is_monotone(schedule, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config(f"governor:\n  schedule: {schedule}\n")


def test_cross_section_checks():
    with pytest.raises(ConfigError, match="resume_drawdown: must be below limits.max_drawdown"):
        parse_config("limits: {max_drawdown: 0.3}\nbreakers: {resume_drawdown: 0.3}\n")
    with pytest.raises(ConfigError, match="one cluster each"):
        parse_config("clusters: {a: [BTCUSDT, ETHUSDT], b: [ETH/USDT]}\n")


def test_unreadable_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match=r"line 3, column 1: not valid YAML"):
        parse_config("limits:\n  max_asset_weight: [0.1\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        parse_config("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="limits: must be a mapping"):
        parse_config("limits: 3\n")


def test_rebalance_section_sets_the_cost_aware_rule_and_names_mistakes():
    cfg = parse_config("rebalance:\n  trade_fraction: 0.5\n  band_scale: 3\n")
    assert cfg.rebalance == CostAwareSettings(trade_fraction=0.5, band_scale=3.0)
    assert parse_config("rebalance:\n").rebalance == CostAwareSettings()
    for text, message in [
        ("rebalance: {trade_fraction: 2}", "trade_fraction must be in [0, 1]"),
        (
            "rebalance: {tradefraction: 0.5}",
            "rebalance.tradefraction: unknown key; allowed keys: band_scale",
        ),
        ("rebalance: {band_scale: wide}", "rebalance.band_scale: must be a number (got 'wide')"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            parse_config(text, "cfg.yaml")


# --- Each section is a typed, frozen object of the package that uses it -------------


def test_sections_are_the_owning_packages_frozen_objects():
    cfg = parse_config(
        "sizing: {target_vol: 0.3}\ngovernor: {recovery_bars: 5}\nrebalance: {band_scale: 2}\n"
    )
    assert isinstance(cfg.sizing, SizingSettings) and cfg.sizing.target_vol == 0.3
    assert isinstance(cfg.governor, GovernorSettings) and cfg.governor.recovery_bars == 5
    assert isinstance(cfg.rebalance, CostAwareSettings) and cfg.rebalance.band_scale == 2
    for section, key in [(cfg.sizing, "target_vol"), (cfg.governor, "recovery_bars")]:
        with pytest.raises(ValueError, match="frozen"):
            setattr(section, key, 1)


def test_sizing_keys_are_real_and_typos_are_errors():
    """Old code: ``sizing:`` was a free mapping, so ``target_vol: 0.2`` did nothing and a
    typo passed silently."""
    cfg = parse_config(
        "sizing:\n  target_vol: 0.2\n  max_gross: 0.5\n  cov_window: 90\n"
        "  no_cut_score: 10\n  full_cut_score: 40\n  trading: band\n"
    )
    risk = cfg.sizing.risk_sizing()
    assert (risk.target_vol, risk.max_gross, risk.cov_window) == (0.2, 0.5, 90)
    assert (risk.no_cut_score, risk.full_cut_score) == (10, 40)
    with pytest.raises(ConfigError, match=re.escape("sizing.target_volatility: unknown key")):
        parse_config("sizing: {target_volatility: 0.2}\n", "cfg.yaml")
    with pytest.raises(ConfigError, match="sizing.trading: must be one of"):
        parse_config("sizing: {trading: sometimes}\n")
    with pytest.raises(ConfigError, match="no_cut_score .50. must be below full_cut_score"):
        parse_config("sizing: {no_cut_score: 50, full_cut_score: 40}\n")
    with pytest.raises(ConfigError, match="min_history .90. must not exceed cov_window"):
        parse_config("sizing: {min_history: 90}\n")


def test_duplicate_keys_are_errors_naming_key_line_and_file(tmp_path):
    """Old code: YAML kept the later value, so a tight limit was silently loosened."""
    path = tmp_path / "dup.yaml"
    path.write_text(
        "limits:\n"
        "  max_asset_weight: 0.2\n"
        "  min_cash: 0.05\n"
        "  max_asset_weight: 0.9\n"
        "sizing: {target_vol: 0.3, target_vol: 0.9}\n"
        "limits:\n"
        "  max_drawdown: 0.3\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert info.value.problems == [
        "limits.max_asset_weight: duplicate key at line 4 (first at line 2); give each key once",
        "sizing.target_vol: duplicate key at line 5 (first at line 5); give each key once",
        "limits: duplicate key at line 6 (first at line 1); give each key once",
    ]
    # The same key in different mappings is no repeat; an explicit `<<:` merge may be
    # overridden, as YAML means it to be.
    cfg = parse_config(
        "clusters: {a: [BTCUSDT], b: [ETHUSDT]}\n"
        "limits: {<<: {max_asset_weight: 0.5}, max_asset_weight: 0.3, max_cluster_weight: 0.5}\n"
    )
    assert cfg.limits.max_asset_weight == 0.3


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            'limits: {max_asset_weight: "0.2"}',
            "limits.max_asset_weight: must be a number (got '0.2')",
        ),
        ("limits: {max_asset_weight: yes}", "limits.max_asset_weight: must be a number (got True)"),
        ("breakers: {cooldown: 2.5}", "breakers.cooldown: must be a whole number (got 2.5)"),
        ("breakers: {auto_resume: 'no'}", "breakers.auto_resume: must be true or false (got 'no')"),
        ("sizing: {cov_window: 60.5}", "sizing.cov_window: must be a whole number (got 60.5)"),
        ("sizing: {downside: 1}", "sizing.downside: must be true or false (got 1)"),
        ("governor: {interpolate: 'true'}", "governor.interpolate: must be true or false"),
        ("rebalance: {max_delay_bars: '10'}", "rebalance.max_delay_bars: must be a whole number"),
    ],
)
def test_wrong_types_are_errors_not_coerced(text, message):
    """Old code coerced ``"0.2"`` and ``yes`` (to 1.0: no limit at all) silently."""
    with pytest.raises(ConfigError, match=re.escape(message)) as info:
        parse_config(text + "\n", "cfg.yaml")
    assert "cfg.yaml" in str(info.value)


def test_lists_and_whole_numbers_still_read():
    cfg = parse_config(
        "limits: {allowed_symbols: [BTC/USDT], max_gross_leverage: 2}\n"
        "governor: {schedule: [[0.2, 0.5]]}\n"
        "breakers: {resume_conditions: [data_fresh]}\n"
    )
    assert cfg.limits.allowed_symbols == ("BTC/USDT",) and cfg.limits.max_gross_leverage == 2.0
    assert cfg.governor.schedule == ((0.2, 0.5),)
    assert cfg.breakers.resume_conditions == ("data_fresh",)


def test_governor_recovery_bars_zero_is_an_error_not_silently_one():
    with pytest.raises(ConfigError, match="governor.recovery_bars: must be >= 1"):
        parse_config("governor: {recovery_bars: 0}\n")
