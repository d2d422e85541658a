"""Application Default Credentials, looked up without building a client (doctor's credentials check).

Here because Google libraries are imported only inside cloud/ (DESIGN §2), and only when asked.
"""

from __future__ import annotations


def default_credentials_problem() -> str | None:
    """None when Application Default Credentials are found; otherwise the error's type name (its message can
    quote file paths and environment values, so it is not repeated)."""
    try:
        import google.auth

        google.auth.default()
    except Exception as e:  # noqa: BLE001 - DefaultCredentialsError, a malformed key file, ...
        return type(e).__name__
    return None
