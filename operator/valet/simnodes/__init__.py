"""Simulated GPU nodes over the public Kubernetes API: Nodes, Leases, a kubelet, a GPU agent."""
