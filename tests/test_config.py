"""Only configuration mistakes raise, and they raise at construction with a clear message."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from serla import Config, Serla


def make(**kw: Any) -> Serla:
    kw.setdefault("flush_on_exit", False)
    return Serla(kw.pop("api_key", "sk_live_test"), **kw)


@pytest.mark.parametrize("key", ["", "   ", None, 123])
def test_empty_or_non_string_api_key_raises_value_error(key: Any) -> None:
    with pytest.raises(ValueError, match="api_key"):
        make(api_key=key)


def test_api_key_with_whitespace_raises() -> None:
    with pytest.raises(ValueError, match=r"cannot be sent in an HTTP header at position 10: U\+0020"):
        make(api_key="sk_live_a b")


@pytest.mark.parametrize(
    ("kw", "exc"),
    [
        ({"host": "serla.dev"}, ValueError),
        ({"host": "ftp://serla.dev"}, ValueError),
        ({"host": "https://serla.dev?x=1"}, ValueError),
        ({"host": "https://user:pw@serla.dev"}, ValueError),
        ({"host": "https://serla.dev:99999"}, ValueError),
        ({"flush_interval_seconds": 0}, ValueError),
        ({"flush_interval_seconds": float("nan")}, ValueError),
        ({"flush_interval_seconds": "5"}, TypeError),
        ({"batch_size": 0}, ValueError),
        ({"batch_size": 5.0}, TypeError),
        ({"batch_size": True}, TypeError),
        ({"max_queue_size": 0}, ValueError),
        ({"timeout": -1}, ValueError),
        ({"block_on_full_seconds": -0.1}, ValueError),
        ({"ca_bundle": 3}, TypeError),
    ],
)
def test_bad_options_raise(kw: dict[str, Any], exc: type[Exception]) -> None:
    with pytest.raises(exc, match="Serla"):
        make(**kw)


def test_options_must_be_keywords() -> None:
    with pytest.raises(TypeError):
        Serla("sk_live_test", "https://serla.dev")  # type: ignore[misc]


def test_defaults_are_the_documented_ones() -> None:
    c = make().config
    assert (c.host, c.flush_interval_seconds, c.batch_size, c.debug, c.max_queue_size, c.timeout) == (
        "https://serla.dev",
        5.0,
        50,
        False,
        1000,
        10.0,
    )
    assert Config(api_key="k").flush_on_exit is True


def test_batch_size_over_100_is_clamped_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="serla"):
        client = make(batch_size=500)
    assert client.config.batch_size == 100
    assert "batch_size=500" in caplog.text


def test_trailing_slash_and_path_prefix(caplog: pytest.LogCaptureFixture) -> None:
    assert make(host="https://analytics.example.com/serla/").host == "https://analytics.example.com/serla"


def test_plain_http_warns_except_on_loopback(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="serla"):
        make(host="http://127.0.0.5:8787")
        make(host="http://localhost:8787")
        make(host="http://[::1]:8787")
    assert caplog.text == ""
    with caplog.at_level(logging.WARNING, logger="serla"):
        make(host="http://analytics.internal")
    assert "unencrypted" in caplog.text


def test_api_key_never_in_repr_or_config_repr() -> None:
    secret = "sk_live_" + "S3cr3t" * 7 + "x"
    client = make(api_key=secret)
    assert "S3cr3t" not in repr(client)
    assert "S3cr3t" not in repr(client.config)
    assert "sk_live_..." in repr(client)
    with pytest.raises(ValueError) as info:
        make(api_key=secret, host="nope")
    assert "S3cr3t" not in str(info.value)


def test_from_env() -> None:
    cfg = Config.from_env({"SERLA_API_KEY": "k1", "SERLA_HOST": "http://127.0.0.1:1/"})
    assert (cfg.api_key, cfg.host, cfg.disabled) == ("k1", "http://127.0.0.1:1", False)
    assert Config.from_env({"SERLA_DISABLED": "1"}).disabled is True
    with pytest.raises(ValueError, match="SERLA_API_KEY"):
        Config.from_env({})


def test_serla_and_config_share_one_source_of_defaults() -> None:
    """Serla's signature shows every option with the value Config defines (read from Config, not restated)."""
    import inspect

    from serla import Config, Serla

    config = inspect.signature(Config.__init__).parameters
    client = inspect.signature(Serla.__init__).parameters
    shared = [name for name in client if name in config and name not in ("self", "api_key")]
    assert len(shared) >= 25
    for name in shared:
        if name == "disabled":  # None on Serla: read SERLA_DISABLED
            continue
        assert client[name].default == config[name].default, name
        assert client[name].kind is inspect.Parameter.KEYWORD_ONLY


def test_a_config_can_make_a_client() -> None:
    from serla import Config, Serla

    config = Config.from_env({"SERLA_API_KEY": "sk_live_fromconfig", "SERLA_HOST": "http://127.0.0.1:9"})
    client = Serla.from_config(config, flush_on_exit=False, batch_size=7)
    try:
        assert client.config.api_key == "sk_live_fromconfig"
        assert client.host == "http://127.0.0.1:9"
        assert client.config.batch_size == 7
    finally:
        client.shutdown(0)
