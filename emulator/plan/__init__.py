"""Deploy time: an application graph (plus an optional override) and its packages resolved into the node plan.

``plan_application(project, graph, override)`` returns the immutable :class:`AppPlan` the appliance boots:
code nodes with their interfaces, assets, descriptors, camera inputs, parameter values, outputs and network
routes; camera, model and sink nodes. Bad input raises ``ManifestError`` (every problem, with file and JSON
pointer) or ``ProjectError`` (the node, package or asset concerned).
"""

from emulator.plan._plan import (
    AppPlan,
    CameraPlan,
    CodeNodePlan,
    ModelPlan,
    ParamValue,
    SinkPlan,
    plan_application,
)
from emulator.plan._resolve import ACCOUNT_CAMERA_INPUTS, STOCK_CAMERA, STOCK_HDMI, STOCK_INTERFACES

__all__ = [
    "ACCOUNT_CAMERA_INPUTS",
    "STOCK_CAMERA",
    "STOCK_HDMI",
    "STOCK_INTERFACES",
    "AppPlan",
    "CameraPlan",
    "CodeNodePlan",
    "ModelPlan",
    "ParamValue",
    "SinkPlan",
    "plan_application",
]
