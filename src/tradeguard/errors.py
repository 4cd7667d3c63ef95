"""One exception hierarchy; interfaces translate it into CLI messages and HTTP problems."""


class TradeguardError(Exception):
    """Base of every error tradeguard raises on purpose."""


class InputError(TradeguardError, ValueError):
    """The caller gave something unusable: a bad pair, date, range or option."""


class DataNotFoundError(TradeguardError, FileNotFoundError):
    """The data asked for is not where it was looked for."""


class DataFormatError(TradeguardError, ValueError):
    """A file exists but its content is not what its format promises."""


class ExchangeError(TradeguardError):
    """An exchange call failed (after retries for temporary errors)."""
