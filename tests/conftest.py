"""Shared fixtures for the whole suite."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from serla import _log


@pytest.fixture(autouse=True)
def _fresh_warning_limits() -> Iterator[None]:
    """Each test starts with the rate-limited warnings unsaid, so one test's WARNING can't mute another's."""
    _log.reset_warnings()
    yield
    _log.reset_warnings()


@pytest.fixture(autouse=True, scope="session")
def _no_proxy_from_the_environment() -> Iterator[None]:
    """No test inherits a proxy from the machine running the suite (a CI runner's ``HTTPS_PROXY``).

    The SDK honours ``http_proxy``/``https_proxy``/``no_proxy`` (any case) the way ``urllib`` does, and
    does not exempt loopback hosts unless ``NO_PROXY`` says so: an inherited proxy variable would send
    the suite's requests to 127.0.0.1 through it. Every ``*_proxy`` variable is removed for the whole
    session (subprocesses inherit the cleaned environment); tests about proxies set their own with
    ``monkeypatch.setenv``.
    """
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.lower().endswith("_proxy"):
                mp.delenv(name)
        yield


@pytest.fixture(scope="session")
def make_certificate(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str], tuple[Path, Path]]:
    """``make_certificate(common_name, subject_alt_names)``: a self-signed (cert, key) pair made by openssl.

    Skips the test when ``openssl`` can't make one. ``subject_alt_names`` is openssl's syntax, for example
    ``"DNS:localhost,IP:127.0.0.1"``.
    """

    def make(common_name: str, subject_alt_names: str) -> tuple[Path, Path]:
        folder = tmp_path_factory.mktemp("tls")
        cert, key = folder / "cert.pem", folder / "key.pem"
        command = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"]
        command += ["-subj", f"/CN={common_name}", "-addext", f"subjectAltName={subject_alt_names}"]
        try:
            subprocess.run(
                [*command, "-keyout", str(key), "-out", str(cert)],
                check=True,
                capture_output=True,
                timeout=30,
            )
        except (OSError, subprocess.CalledProcessError) as exc:
            pytest.skip(f"openssl cannot make a test certificate: {exc}")
        return cert, key

    return make
