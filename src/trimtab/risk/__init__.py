"""Risk: factor scores, the risk score model, VaR/CVaR, sizing."""
