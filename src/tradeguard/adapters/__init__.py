"""Adapters: files, exchanges and external sources translated into the core's models."""
