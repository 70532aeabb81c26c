"""gbadz as an OAuth 2.0 authorization server, on authlib, behind a small Starlette adapter.

authlib does the protocol (RFC 6749 client credentials; the authorization code grant with
PKCE S256 required (RFC 7636) for people signing in to the console; client authentication with
client_secret_basic / client_secret_post / private_key_jwt per RFC 7523, RFC 7662
introspection, RFC 7009 revocation); this package supplies storage, token minting
(:mod:`gbadz.identity.tokens`), the HTTP adapter and RFC 8414 metadata, laid out by RFC as
authlib lays itself out:

- ``clients``: registered clients and the console's built-in public client (RFC 6749 §2);
- ``rfc6749``: the client credentials and authorization code grants;
- ``rfc7636``: PKCE, S256 required;
- ``rfc7523``: ``private_key_jwt`` client assertions, each used once;
- ``rfc7662``: introspection; ``rfc7009``: revocation;
- ``server``: the authorization server wiring them to gbadz's storage and tokens;
- ``routes``: the HTTP adapter (authlib has no FastAPI integration) and RFC 8414 metadata;
- ``limits``: failed-authentication limits, shared by replicas through the database.
"""

from gbadz.identity.oauth.clients import CONSOLE_CALLBACK, CONSOLE_CLIENT_ID
from gbadz.identity.oauth.limits import FailureLimiter, trusted_networks
from gbadz.identity.oauth.server import GbadzAuthorizationServer

__all__ = [
    "CONSOLE_CALLBACK",
    "CONSOLE_CLIENT_ID",
    "FailureLimiter",
    "GbadzAuthorizationServer",
    "trusted_networks",
]
