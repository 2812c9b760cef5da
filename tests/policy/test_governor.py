import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trimtab.policy.governor import DrawdownGovernor, GovernorSettings


def test_schedule_interpolates_and_steps():
    s = GovernorSettings(schedule=((0.10, 0.75), (0.20, 0.50), (0.30, 0.25)))
    assert s.schedule_ceiling(0.0) == 1.0
    assert s.schedule_ceiling(0.05) == pytest.approx(0.875)
    assert s.schedule_ceiling(0.10) == pytest.approx(0.75)
    assert s.schedule_ceiling(0.25) == pytest.approx(0.375)
    assert s.schedule_ceiling(0.9) == pytest.approx(0.25)
    steps = GovernorSettings(schedule=s.schedule, interpolate=False)
    assert [steps.schedule_ceiling(d) for d in (0.05, 0.10, 0.19, 0.2, 0.5)] == [
        1.0,
        0.75,
        0.75,
        0.5,
        0.25,
    ]
    with pytest.raises(ValueError, match="must not increase"):
        GovernorSettings(schedule=((0.1, 0.5), (0.2, 0.75)))
    with pytest.raises(ValueError, match="must increase"):
        GovernorSettings(schedule=((0.2, 0.5), (0.1, 0.25)))


def test_recovery_ramps_back_gradually_after_confirmation():
    gov = DrawdownGovernor(
        GovernorSettings(schedule=((0.10, 0.75), (0.20, 0.50), (0.30, 0.25)), recovery_bars=10)
    )
    assert gov.update(100).value == 1.0
    c = gov.update(75)  # 25 % drawdown: ceiling 0.375
    assert c.value == pytest.approx(0.375) and c.source == "drawdown"
    c = gov.update(77)  # recovering but not yet 5 % above the trough: no change
    assert c.value == pytest.approx(0.375) and c.source == "recovery"
    c = gov.update(80)  # 6.7 % above the trough: up by 1/10 at most
    assert c.value == pytest.approx(0.475)
    c = gov.update(100)  # back at the peak: still ramping, not one step to 1
    assert c.value == pytest.approx(0.575)
    for _ in range(10):
        c = gov.update(100)
    assert c.value == 1.0 and c.source == "none"


def test_regime_cuts_before_any_drawdown_and_says_so():
    gov = DrawdownGovernor(GovernorSettings(regime_ceiling=0.5, regime_threshold=0.6))
    c = gov.update(100, high_vol_probability=0.9)
    assert c.value == 0.5 and c.source == "regime" and "regime" in c.message
    c = gov.update(101, high_vol_probability=0.3)
    assert c.value == 1.0


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(min_value=-0.3, max_value=0.3), st.floats(min_value=0, max_value=1)),
        min_size=2,
        max_size=200,
    )
)
def test_ceiling_never_rises_while_drawdown_deepens(path):
    """Whatever the regime readings do, the ceiling never rises on a deeper drawdown."""
    gov = DrawdownGovernor()
    equity = 100.0
    last = gov.update(equity)
    for r, high_vol in path:
        equity *= 1 + r
        now = gov.update(equity, high_vol_probability=high_vol)
        assert 0.0 <= now.value <= 1.0
        if now.drawdown > last.drawdown:
            assert now.value <= last.value + 1e-12
        last = now
    assert np.isfinite(last.value)


def test_a_transfer_moves_the_governors_peak_instead_of_reading_as_a_drawdown():
    # Hand-worked: peak 100; 60 transferred out leaves 40 with no loss: drawdown 0, no
    # ceiling. Without the flow, 40 against the peak of 100 reads as a 60 % drawdown.
    from trimtab.policy.governor import DrawdownGovernor, GovernorSettings

    with_flow, without = DrawdownGovernor(GovernorSettings()), DrawdownGovernor(GovernorSettings())
    for gov in (with_flow, without):
        gov.update(100.0)
    moved = with_flow.update(40.0, flow=-60.0)
    assert moved.drawdown == 0.0 and moved.value == 1.0
    assert without.update(40.0).drawdown == pytest.approx(0.6)
    # A real 10 % loss after the transfer is measured from the moved peak (40).
    assert with_flow.update(36.0).drawdown == pytest.approx(0.1)
