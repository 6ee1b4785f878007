"""Client for Stepgate's app API: the connected accounts an API key was given, their fresh
credentials, requests to their providers through Stepgate's proxy, and (in
:mod:`stepgate.webhooks`) verified webhook deliveries."""

from stepgate import webhooks
from stepgate._version import __version__
from stepgate.client import AsyncClient, Client
from stepgate.errors import (
    AccountNotInScope,
    InvalidApiKey,
    NeedsSignIn,
    NotFound,
    ProviderUnavailable,
    ProxyNotAllowed,
    RateLimited,
    SignInLinksOff,
    StepgateError,
    StepgateUnreachable,
)
from stepgate.models import Account, AccountError, Credentials, SignInLink

__all__ = [
    "Account",
    "AccountError",
    "AccountNotInScope",
    "AsyncClient",
    "Client",
    "Credentials",
    "InvalidApiKey",
    "NeedsSignIn",
    "NotFound",
    "ProviderUnavailable",
    "ProxyNotAllowed",
    "RateLimited",
    "SignInLink",
    "SignInLinksOff",
    "StepgateError",
    "StepgateUnreachable",
    "__version__",
    "webhooks",
]
