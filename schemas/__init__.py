"""What events are: the CloudEvents envelope, the event types, validation, JSON Schemas."""
