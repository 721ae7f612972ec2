"""Assertions on the error contract's REST bodies (config/exceptions.py)."""

from __future__ import annotations

from typing import Any


def assert_field_error(response: Any, field: str, message: str, code: str = "invalid_input"):
    """A 400 whose only field error is `message` on `field`, with the contract's code/detail."""
    assert response.status_code == 400, response.content
    assert response.json() == {field: [message], "code": code, "detail": f"{field}: {message}"}
