"""Fixtures for the HIAS tests: a real Mosquitto (TLS + password file) per test, stopped after."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

from tests.hias.broker import MOSQUITTO, Broker, make_passwords, make_pki
from tests.hias.listener import HiasListener


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    if not Path(MOSQUITTO).exists() or not shutil.which("openssl"):
        pytest.fail("mosquitto and openssl are needed: run scripts/test (installs them)")
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def passwords(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_passwords(tmp_path_factory.mktemp("passwd") / "passwd")


@pytest.fixture
def make_broker(tmp_path: Path, pki, passwords) -> Iterator:
    """Factory: brokers are created stopped (`.start()` them); all are stopped in teardown."""
    made: List[Broker] = []

    def make(plain: bool = False, **options: Any) -> Broker:
        b = Broker(tmp_path / f"broker{len(made)}", pki, passwords, plain=plain, **options)
        made.append(b)
        return b

    yield make
    for b in made:
        b.stop()


@pytest.fixture
def broker(make_broker) -> Broker:
    b = make_broker()
    b.start()
    return b


@pytest.fixture
def listener(broker: Broker) -> Iterator[HiasListener]:
    lst = HiasListener(broker).start()
    yield lst
    lst.stop()


@pytest.fixture
def primed_broker(make_broker) -> Broker:
    """A stopped broker that already holds the HIAS listener's persistent subscription.

    So when the test starts it, messages from an edge that connects before the listener
    does are queued for the listener instead of being dropped (as on a real HIAS broker,
    where HIAS's own subscription long predates the device).
    """
    b = make_broker()
    b.start()
    HiasListener(b).start().stop()
    b.stop()
    return b
