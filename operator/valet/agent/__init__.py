"""The node agent: probes GPUs (NVML, DCGM or simulated), classifies, publishes on its Node.

The only package that imports pynvml.
"""
