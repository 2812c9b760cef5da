"""The master account's keys and the sub-accounts' emails, from the environment or an
owner-only keys file: what ``trimtab run`` on an exchange moves capital with."""

from __future__ import annotations

import os

import pytest

from trimtab.app.exchange import load_transfer_keys
from trimtab.app.secrets import SecretError

SUBS = ["core", "trend-2"]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in list(os.environ):
        if name.startswith("TRIMTAB_"):
            monkeypatch.delenv(name)


def test_from_the_environment(monkeypatch):
    assert load_transfer_keys(SUBS) == (None, {})  # no master key: no transfers
    monkeypatch.setenv("TRIMTAB_MASTER_ACCOUNT_API_KEY", "mk")
    with pytest.raises(SecretError, match="set TRIMTAB_MASTER_ACCOUNT_API_SECRET too"):
        load_transfer_keys(SUBS)
    monkeypatch.setenv("TRIMTAB_MASTER_ACCOUNT_API_SECRET", "ms")
    monkeypatch.setenv("TRIMTAB_TREND_2_EMAIL", " trend@fund.example ")
    (key, secret), emails = load_transfer_keys(SUBS)
    assert (key.reveal(), secret.reveal()) == ("mk", "ms")
    assert "mk" not in repr(key) and "ms" not in str(secret)
    assert emails == {"trend-2": "trend@fund.example"}  # core trades on the master


def write_keys(tmp_path, text: str, mode: int = 0o600):
    path = tmp_path / "keys.yaml"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_from_a_keys_file(tmp_path):
    path = write_keys(
        tmp_path,
        "master_account: {api_key: mk, secret: ms}\n"
        "core: {api_key: ck, secret: cs, email: core@fund.example}\n"
        "trend-2: {api_key: tk, secret: ts, email: trend@fund.example}\n",
    )
    (key, secret), emails = load_transfer_keys(SUBS, path)
    assert (key.reveal(), secret.reveal()) == ("mk", "ms")
    assert emails == {"core": "core@fund.example", "trend-2": "trend@fund.example"}
    without = write_keys(tmp_path, "core: {api_key: ck, secret: cs}\n")
    assert load_transfer_keys(SUBS, without) == (None, {})


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("master_account: {api_key: mk}\n", "master_account.secret is missing or empty"),
        (
            "master_account: {api_key: mk, secret: ms}\ncore: {email: 123}\n",
            "core.email must be the sub-account's email address, got 123",
        ),
        ("master_account: [mk, ms]\n", "no entry master_account"),
    ],
)
def test_a_bad_keys_file_says_what_is_wrong(tmp_path, text, words):
    with pytest.raises(SecretError, match=words):
        load_transfer_keys(SUBS, write_keys(tmp_path, text))


def test_a_keys_file_others_can_read_is_refused(tmp_path):
    path = write_keys(tmp_path, "master_account: {api_key: mk, secret: ms}\n", 0o644)
    with pytest.raises(SecretError, match="chmod 600"):
        load_transfer_keys(SUBS, path)


@pytest.mark.parametrize("name", ["master_account", "master-account", "Master.Account"])
def test_a_subaccount_named_like_the_master_is_refused(name):
    with pytest.raises(SecretError, match="are the master account's"):
        load_transfer_keys(["core", name])


def test_a_missing_email_is_said_with_where_it_comes_from(monkeypatch, tmp_path):
    from trimtab.app.exchange import open_venue

    monkeypatch.setenv("TRIMTAB_MASTER_ACCOUNT_API_KEY", "master-key-value")
    monkeypatch.setenv("TRIMTAB_MASTER_ACCOUNT_API_SECRET", "master-secret-value")
    keys = {"core": ("ck", "cs"), "trend-2": ("tk", "ts")}
    with pytest.raises(ValueError, match="subaccount core: no sub-account email") as err:
        open_venue(SUBS, journal=tmp_path / "venue.db", keys=keys, transfers=True)
    assert "TRIMTAB_<NAME>_EMAIL" in str(err.value)
    assert "master-key-value" not in str(err.value)
    assert "master-secret-value" not in str(err.value)
    # Both emails set: the venue can move capital.
    monkeypatch.setenv("TRIMTAB_CORE_EMAIL", "core@fund.example")
    monkeypatch.setenv("TRIMTAB_TREND_2_EMAIL", "trend@fund.example")
    venue = open_venue(SUBS, journal=tmp_path / "venue2.db", keys=keys, transfers=True)
    assert callable(venue.transfer)
    venue.close()
