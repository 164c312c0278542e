"""Fixtures shared by the test modules: moto's real server as STS, once per test session."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.moto import MotoHandle, make_aws_identities, start_moto


@pytest.fixture(scope="session")
def moto() -> Iterator[MotoHandle]:
    """moto's server with request authentication on (see ``cedarkey.dev.moto``)."""
    with start_moto() as handle:
        yield handle


@pytest.fixture(scope="session")
def aws(moto: MotoHandle) -> dict[str, Any]:
    """Credentials moto issued: ``admin``, ``user``, ``dev_role``, ``other_role``."""
    return make_aws_identities(moto.url)
