"""Event buses: intake of bot events from NATS JetStream (durable, at-least-once, deduplicated)."""

from tradeguard.adapters.bus.nats_intake import IntakeCounters, NatsIntake, msg_id, subject_for

__all__ = ["IntakeCounters", "NatsIntake", "msg_id", "subject_for"]
