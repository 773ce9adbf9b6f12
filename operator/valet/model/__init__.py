"""Frozen data of the core: resource specs, the cluster snapshot, the plan, the fault table.

Everything here is parsed once at the edge from raw Kubernetes dicts and never
mutated; nothing here does I/O or reads the clock.
"""
