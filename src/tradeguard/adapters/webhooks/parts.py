"""What the webhook routes and the service's lifespan need, built once by the composition root."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from tradeguard.adapters.store.outbox import Outbox
from tradeguard.adapters.store.webhooks import WebhookStore
from tradeguard.adapters.webhooks.worker import WebhookWorker


@dataclass(frozen=True, slots=True)
class WebhookParts:
    """Endpoints, the outbox (also the audit log's collaborator), the delivery worker, rotation overlap."""

    store: WebhookStore
    outbox: Outbox
    worker: WebhookWorker
    rotation_overlap: timedelta
