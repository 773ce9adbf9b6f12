"""Pure decisions over a ClusterView: ``decide(view, now) -> Plan``.

No I/O, no clock, no framework: time comes in as an argument and the result is data.
The operator and the fleet simulator run this same code.
"""

from valet.policy.config import PolicyConfig
from valet.policy.decide import decide
from valet.policy.memo import PassMemo

__all__ = ["PassMemo", "PolicyConfig", "decide"]
