"""event-gateway: authenticated callbacks in, confirmed CloudEvents on RabbitMQ out.

Importing this package does nothing and pulls in no web stack: the worker side
(``consumers``) imports the shared modules from here.
"""

__version__ = "0.1.0"
