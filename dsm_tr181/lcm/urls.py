"""DU URLs as logs, messages and the data model may show them.

A URL's userinfo and query may hold credentials (pre-signed URLs carry a token in
their query), so logs and messages show :func:`display_url`, and
``DeploymentUnit.{i}.URL`` serves :func:`served_url`; the full URL is kept sealed
(see :mod:`dsm_tr181.lcm.deployments`).
"""

from __future__ import annotations

from urllib.parse import urlsplit


def display_url(url: str) -> str:
    """``url`` fit for messages and logs: no userinfo, and the query elided (it may hold tokens)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<malformed URL>"
    netloc = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=netloc, query="…" if parts.query else "", fragment="").geturl()


def served_url(url: str) -> str:
    """``url`` as ``DeploymentUnit.{i}.URL`` serves it: without userinfo, query or fragment."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return ""
    netloc = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=netloc, query="", fragment="").geturl()
