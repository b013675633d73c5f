"""The one error a domain rule raises: a request that cannot be carried out, and why.

``code`` says what kind of refusal it is; the JSON API maps it to a status (``HTTP_STATUS``),
pages show ``message`` next to ``field``.
"""

from __future__ import annotations

HTTP_STATUS = {
    "invalid": 422,
    "unauthenticated": 401,
    "forbidden": 403,
    "not_found": 404,
    "conflict": 409,
}


class ActionError(Exception):
    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field

    @property
    def status(self) -> int:
        return HTTP_STATUS.get(self.code, 400)
