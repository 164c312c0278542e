"""moto's real server for the tests: see :mod:`cedarkey.dev.moto` (the demo uses it too)."""

from cedarkey.dev.moto import (
    ACCOUNT_ID,
    APP_USER,
    DEV_ROLE,
    INSTANCE_ID,
    OTHER_ROLE,
    OTHER_ROLE_PATH,
    OTHER_SESSION,
    REGION,
    MotoHandle,
    botocore_credentials,
    make_aws_identities,
    start_moto,
)

__all__ = [
    "ACCOUNT_ID",
    "APP_USER",
    "DEV_ROLE",
    "INSTANCE_ID",
    "OTHER_ROLE",
    "OTHER_ROLE_PATH",
    "OTHER_SESSION",
    "REGION",
    "MotoHandle",
    "botocore_credentials",
    "make_aws_identities",
    "start_moto",
]
