# What the appliance's type checker sees of the SDK package (the SDK itself is Python 3.8 code, unchecked).
from typing import Any

class PortTimeoutError(TimeoutError): ...
class ModelCallError(RuntimeError): ...
class ApplianceConnectionError(ConnectionError): ...

media: Any
node: Any
port: Any
ports: Any
__version__: str
