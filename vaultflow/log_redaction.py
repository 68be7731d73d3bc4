"""Keeps SAS signatures out of log records that third-party libraries write."""

from __future__ import annotations

import logging
import re


class SignatureFilter(logging.Filter):
    """Cuts SAS signatures (`sig=...`) out of a log record: urllib3 logs every request's URL,
    query string and all, at DEBUG, and a SAS travels in the query string."""

    _SIG = re.compile(r"(?i)\bsig=[^&\s\"']+")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "sig=" in message.lower():
            record.msg, record.args = self._SIG.sub("sig=REDACTED", message), ()
        return True


_SIGNATURE_FILTER = SignatureFilter()


def hide_sas_in_logs() -> None:
    """Install the signature filter on urllib3's request logger (once per process)."""
    logger = logging.getLogger("urllib3.connectionpool")
    if _SIGNATURE_FILTER not in logger.filters:
        logger.addFilter(_SIGNATURE_FILTER)
