"""The one exception type of the OVSDB engine.

``error`` is the RFC 7047 error name, spelled exactly as the RFC (and
ovsdb-server) spell it, because clients match on it: "constraint violation",
"referential integrity violation", "resources exhausted", "I/O error",
"duplicate uuid-name", "domain error", "range error", "timed out",
"not supported", "aborted", "not owner", plus ovsdb-server's "syntax error",
"unknown database", "unknown column", "unknown function" and (sic)
"ovsdb error" for duplicate set elements.  Where the RFC is silent we answer
what ovsdb-server 3.1 answers (checked side by side against it).
"""


class OvsdbError(Exception):
    def __init__(self, error: str, details: str | None = None):
        super().__init__(f"{error}: {details}" if details else error)
        self.error = error
        self.details = details

    def to_json(self) -> dict:
        j = {"error": self.error}
        if self.details:
            j["details"] = self.details
        return j
