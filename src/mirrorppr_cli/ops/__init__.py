"""Named, parametric structural operations (the paper's LLW catalog) and their composition."""

from .catalog import CATALOG, SIMULATED_OPS, Operation, get_operation
from .compose import OpRequest, parse_op, plan_warp

__all__ = [
    "CATALOG", "SIMULATED_OPS", "Operation", "OpRequest", "get_operation", "parse_op", "plan_warp",
]
