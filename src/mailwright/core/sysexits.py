"""The ``<sysexits.h>`` exit codes: the contract of every command-line tool and pipe mailer."""

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    USAGE = 64
    DATAERR = 65
    NOINPUT = 66
    NOUSER = 67
    NOHOST = 68
    UNAVAILABLE = 69
    SOFTWARE = 70
    OSERR = 71
    OSFILE = 72
    CANTCREAT = 73
    IOERR = 74
    TEMPFAIL = 75
    PROTOCOL = 76
    NOPERM = 77
    CONFIG = 78
