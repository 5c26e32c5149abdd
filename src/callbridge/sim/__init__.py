"""A Telnyx simulator: a network peer that speaks Telnyx's REST, webhook and media wire formats.

It knows nothing of the service's internals; it talks to it over HTTP and WebSockets only.
"""

from callbridge.sim.server import Simulator
from callbridge.sim.signing import WebhookSigner

__all__ = ["Simulator", "WebhookSigner"]
