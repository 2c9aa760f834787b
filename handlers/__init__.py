"""What each event does: pure functions (aggregate, event, policy, now) -> Result. No I/O."""
