"""Secrets: never printed, read from an env var or an owner-only file, masked in logs."""

from __future__ import annotations

import io
import logging
import pickle

import pytest

from trimtab.app.secrets import (
    MASK,
    Secret,
    SecretError,
    SecretFilter,
    install_secret_filter,
    load_secret,
    mask_secrets,
)

VALUE = "tok-9f8e7d6c5b4a-planted"


def test_secret_never_prints():
    s = Secret(VALUE, "phone")
    shown = [str(s), repr(s), f"{s}", f"{s!r}", f"{s:>40}", "%s" % s, str([s]), str({"k": s})]  # noqa: UP031
    assert all(VALUE not in text for text in shown)
    assert str(s) == MASK and "phone" in repr(s)
    assert s.reveal() == VALUE
    with pytest.raises(TypeError):
        pickle.dumps(s)


def test_from_env(monkeypatch):
    monkeypatch.setenv("TT_TEST_URL", f"  {VALUE}\n")
    assert load_secret("phone", env="TT_TEST_URL").reveal() == VALUE
    monkeypatch.delenv("TT_TEST_URL")
    with pytest.raises(SecretError, match="environment variable TT_TEST_URL is not set"):
        load_secret("phone", env="TT_TEST_URL")
    monkeypatch.setenv("TT_TEST_URL", " ")
    with pytest.raises(SecretError, match="TT_TEST_URL is empty"):
        load_secret("phone", env="TT_TEST_URL")
    with pytest.raises(SecretError, match="exactly one"):
        load_secret("phone")


def test_from_an_owner_only_file(tmp_path):
    f = tmp_path / "phone.url"
    f.write_text(VALUE + "\n")
    f.chmod(0o600)
    assert load_secret("phone", file=f).reveal() == VALUE
    f.chmod(0o400)
    assert load_secret("phone", file=str(f)).reveal() == VALUE
    for mode in (0o644, 0o640, 0o604, 0o620):
        f.chmod(mode)
        with pytest.raises(SecretError) as err:
            load_secret("phone", file=f)
        text = str(err.value)
        assert str(f) in text and f"{mode:04o}" in text and f"chmod 600 {f}" in text
        assert VALUE not in text
    with pytest.raises(SecretError, match=r"does not exist"):
        load_secret("phone", file=tmp_path / "missing.url")
    (tmp_path / "empty").write_text("\n")
    (tmp_path / "empty").chmod(0o600)
    with pytest.raises(SecretError, match="is empty"):
        load_secret("phone", file=tmp_path / "empty")
    with pytest.raises(SecretError, match="not a regular file"):
        load_secret("phone", file=tmp_path)


def test_log_records_are_masked():
    s = Secret("another-planted-value-123", "key")
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    install_secret_filter(handler)
    logger = logging.getLogger("tt.test.secrets")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        logger.info("url is %s", s.reveal())
        logger.warning(f"inline {s.reveal()} and {VALUE}")
        try:
            raise RuntimeError(f"boom at {s.reveal()}")
        except RuntimeError:
            logger.exception("failed")
        logger.debug("nothing secret here: %d", 42)
    finally:
        logger.removeHandler(handler)
    text = out.getvalue()
    assert s.reveal() not in text and VALUE not in text
    assert text.count(MASK) >= 3 and "boom at ***" in text and "RuntimeError" in text
    assert "nothing secret here: 42" in text


def test_mask_longest_first_and_extra():
    Secret("abcd-1234", "x")
    Secret("abcd-1234-longer", "y")
    assert mask_secrets("a abcd-1234-longer b abcd-1234") == "a *** b ***"
    assert mask_secrets("path /hook/zz-extra-zz", ("zz-extra-zz",)) == "path /hook/***"
    assert isinstance(SecretFilter(), logging.Filter)
