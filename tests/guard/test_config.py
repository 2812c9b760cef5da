import re

import pytest

from trimtab.config import (
    ConfigError,
    GovernorConfig,
    TrimtabConfig,
    example_yaml,
    load_config,
    parse_config,
)
from trimtab.guard.breakers import BreakerConfig
from trimtab.guard.limits import Limits


def test_no_file_is_the_default_configuration():
    cfg = TrimtabConfig()
    assert cfg.limits == Limits() and cfg.breakers == BreakerConfig()
    assert cfg.governor.schedule == ((0.25, 0.75), (0.35, 0.50), (0.45, 0.25))
    assert cfg.governor.recovery_bars == 20 and cfg.governor.interpolate is True
    assert cfg.sizing == {} and cfg.clusters == {}


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
    assert cfg.governor == GovernorConfig()


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


def test_sizing_is_a_free_mapping_for_now():
    cfg = parse_config("sizing: {method: risk, target_vol: 0.4}\n")
    assert cfg.sizing == {"method": "risk", "target_vol": 0.4}


def test_rebalance_section_sets_the_cost_aware_rule_and_names_mistakes():
    from trimtab.policy.rebalance import CostAwareSettings

    cfg = parse_config("rebalance:\n  trade_fraction: 0.5\n  band_scale: 3\n")
    assert cfg.rebalance_settings() == CostAwareSettings(trade_fraction=0.5, band_scale=3.0)
    assert parse_config("rebalance:\n").rebalance_settings() == CostAwareSettings()
    for text, message in [
        ("rebalance: {trade_fraction: 2}", "trade_fraction must be in [0, 1]"),
        ("rebalance: {tradefraction: 0.5}", "unknown key 'tradefraction'; allowed: band_scale"),
        ("rebalance: {band_scale: wide}", "band_scale must be a number"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            parse_config(text, "cfg.yaml")
