"""Where things live: settings, Kafka admin, PostgreSQL, logging, the local stack, the CLI."""
