"""Workers that consume the gateway's CloudEvents from RabbitMQ and keep state about them."""
