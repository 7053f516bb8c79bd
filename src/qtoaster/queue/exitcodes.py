"""qmail-queue's exit codes and the reply each one means (spec section 13).

This is the contract between anything that queues mail and the queue program
(qmail-queue(8), qmail.c ``qmail_close``): a number on exit, mapped to a text whose
first letter says permanent (``D``, SMTP 554) or temporary (``Z``, SMTP 451).

Invariant: :func:`reply_for` gives qmail's text byte for byte, without the letter.
"""

from __future__ import annotations

from qtoaster.core.reply import Reply

OK = 0
ADDRESS_TOO_LONG = 11  # an envelope address of 1000 bytes or more
PERMANENT_REJECT = 31
OUT_OF_MEMORY = 51
TIMEOUT = 52
WRITE_ERROR = 53  # write error or disk full
READ_ERROR = 54  # reading the message or the envelope failed
CONFIG_ERROR = 55  # unable to read configuration
NETWORK_ERROR = 56
HOME_ERROR = 61  # trouble in home directory
CREATE_ERROR = 63  # 62-66: trouble creating files in queue
TEMPORARY_REJECT = 71
INTERNAL_BUG = 81
BAD_ENVELOPE = 91  # envelope not F...\0(T...\0)*\0: qmail reports it as an internal bug
EXEC_ERROR = 120

# code -> qmail's text with its D/Z letter (qmail.c qmail_close).
_TEXTS: dict[int, str] = {
    ADDRESS_TOO_LONG: "Denvelope address too long for qq (#5.1.3)",
    115: "Denvelope address too long for qq (#5.1.3)",
    PERMANENT_REJECT: "Dmail server permanently rejected message (#5.3.0)",
    OUT_OF_MEMORY: "Zqq out of memory (#4.3.0)",
    TIMEOUT: "Zqq timeout (#4.3.0)",
    WRITE_ERROR: "Zqq write error or disk full (#4.3.0)",
    READ_ERROR: "Zqq read error (#4.3.0)",
    CONFIG_ERROR: "Zqq unable to read configuration (#4.3.0)",
    NETWORK_ERROR: "Zqq trouble making network connection (#4.3.0)",
    HOME_ERROR: "Zqq trouble in home directory (#4.3.0)",
    **{code: "Zqq trouble creating files in queue (#4.3.0)" for code in range(62, 67)},
    TEMPORARY_REJECT: "Zmail server temporarily rejected message (#4.3.0)",
    72: "Zconnection to mail server timed out (#4.4.1)",
    73: "Zconnection to mail server rejected (#4.4.1)",
    74: "Zcommunication with mail server failed (#4.4.2)",
    INTERNAL_BUG: "Zqq internal bug (#4.3.0)",
    BAD_ENVELOPE: "Zqq internal bug (#4.3.0)",
    EXEC_ERROR: "Zunable to exec qq (#4.3.0)",
}
CRASHED_TEXT = "Zqq crashed (#4.3.0)"
OTHER_TEXT = "Zqq temporary problem (#4.3.0)"


def text_for(code: int) -> str:
    """qmail's text for an exit code, with its leading ``D``/``Z`` letter."""
    if code < 0:  # killed by a signal: qmail_close reports a crash
        return CRASHED_TEXT
    return _TEXTS.get(code, OTHER_TEXT)


def reply_for(code: int) -> Reply:
    """The SMTP reply for a non-zero exit code: ``D`` -> 554, ``Z`` -> 451."""
    text = text_for(code)
    return Reply(554 if text[0] == "D" else 451, text[1:])


def is_permanent(code: int) -> bool:
    return text_for(code)[0] == "D"
