"""The fleet simulator: an in-memory cluster and a discrete-event loop around policy.decide."""
