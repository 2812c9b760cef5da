"""Service functions that the CLI, the API and the alerts all call."""
