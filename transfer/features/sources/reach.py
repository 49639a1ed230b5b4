"""Whether a download address answers, quickly: what tells "not cached and no network" apart from "will
download" before a study's first stage."""

from __future__ import annotations


def reachable(url: str, timeout: float = 5.0) -> str | None:
    """None when ``url`` answers a HEAD request within ``timeout`` seconds; else why not."""
    import urllib.request

    if not url:
        return "no download address is known"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
            return None
    except OSError as error:  # URLError, timeouts, refused connections
        return f"{url} cannot be reached: {getattr(error, 'reason', error)}"
