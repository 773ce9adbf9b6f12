"""The failure model: Llama 3's published interruption mix, as seeded per-node events.

Llama 3 pre-training saw 419 unexpected interruptions in 54 days on 16,384 H100s
(2,048 nodes). Each class names the signal valet's agent would publish and how
long repair takes. A small share of nodes are lemons that fail far more often.
"""

from __future__ import annotations

import dataclasses
import math
import random

LLAMA3_INTERRUPTIONS = 419
LLAMA3_DAYS = 54.0
LLAMA3_NODES = 2048


@dataclasses.dataclass(frozen=True)
class FailureClass:
    name: str
    count: int  # interruptions of this class in the Llama 3 run
    signal: str  # what the agent publishes (fault table signal)
    repair_minutes: float  # time the remediation takes when it works
    fix_probability: float = 0.9  # chance one remediation fixes it

    @property
    def node_fault(self) -> bool:
        """False for application faults: the job restarts, the node is fine."""
        return self.signal != "xid:13"


LLAMA3_MIX: tuple[FailureClass, ...] = (
    FailureClass("faulty GPU", 148, "xid:79", 40),
    FailureClass("GPU HBM3 memory", 72, "xid:48", 10, 0.85),
    FailureClass("software bug", 54, "xid:13", 0),
    FailureClass("network switch/cable", 35, "node-problem", 60),
    FailureClass("host maintenance", 32, "node-problem", 120, 1.0),
    FailureClass("GPU SRAM memory", 19, "xid:94", 10, 0.8),
    FailureClass("GPU system processor", 17, "xid:119", 40),
    FailureClass("NIC", 7, "node-problem", 60),
    FailureClass("NCCL watchdog timeout", 7, "xid:13", 0),
    FailureClass("silent data corruption", 6, "sdc", 0, 0.0),
    FailureClass("GPU thermal interface", 6, "thermal-shutdown", 45, 0.7),
    FailureClass("other host hardware", 16, "node-problem", 90, 0.8),
)


@dataclasses.dataclass(frozen=True)
class Failure:
    at: float  # seconds from the start
    node: int  # node index
    kind: FailureClass
    fixes: bool  # whether the first remediation will fix it


def per_node_rate(mix: tuple[FailureClass, ...] = LLAMA3_MIX, scale: float = 1.0) -> float:
    """Interruptions per node per second."""
    total = sum(c.count for c in mix)
    return scale * total / (LLAMA3_DAYS * 86400 * LLAMA3_NODES)


def draw_failures(
    nodes: int,
    seconds: float,
    *,
    seed: int,
    scale: float = 1.0,
    lemon_share: float = 0.01,
    lemon_factor: float = 20.0,
    mix: tuple[FailureClass, ...] = LLAMA3_MIX,
) -> list[Failure]:
    """A reproducible failure sequence; every policy in one run sees the same one."""
    rng = random.Random(seed)
    rate = per_node_rate(mix, scale)
    lemons = set(rng.sample(range(nodes), k=max(0, round(nodes * lemon_share))))
    # Keep the fleet-wide rate at the published figure with lemons included.
    weight_total = nodes - len(lemons) + len(lemons) * lemon_factor
    base = rate * nodes / weight_total if weight_total else 0.0
    classes = list(mix)
    weights = [c.count for c in mix]
    failures: list[Failure] = []
    for node in range(nodes):
        node_rate = base * (lemon_factor if node in lemons else 1.0)
        if node_rate <= 0:
            continue
        t = rng.expovariate(node_rate)
        while t < seconds:
            kind = rng.choices(classes, weights)[0]
            failures.append(Failure(t, node, kind, rng.random() < kind.fix_probability))
            t += rng.expovariate(node_rate)
    failures.sort(key=lambda f: f.at)
    return failures


def expected_failures(nodes: int, seconds: float, scale: float = 1.0) -> float:
    return per_node_rate(scale=scale) * nodes * seconds


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)
