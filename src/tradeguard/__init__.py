"""tradeguard: a self-hosted risk service above fleets of trading bots."""

__version__ = "0.1.0"
