"""An in-memory Kubernetes API server (the emulator): kmock's aiohttp server and discovery,
with a store that does what etcd and the API server's generic registry do. It knows the core
resources valet uses and valet's CRDs. ``valet demo`` runs on it when no real control plane
is at hand; the integration tests run every scenario on it."""
