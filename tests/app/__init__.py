"""Tests of trimtab.app."""
