"""Live external sources (sentiment, macro, funding) with timeouts, retries, caching and freshness."""
