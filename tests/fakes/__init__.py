"""Local stand-ins for external services (exchanges), served on 127.0.0.1 for tests."""
