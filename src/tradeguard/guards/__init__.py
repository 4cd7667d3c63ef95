"""Application layer: guards that orchestrate the core and own the policies."""
