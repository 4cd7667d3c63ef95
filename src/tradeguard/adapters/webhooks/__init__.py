"""Webhooks: Standard Webhooks signing, the retry policy and the delivery worker (the outbox and the
endpoints live in the store: `adapters.store.outbox`, `adapters.store.webhooks`)."""
