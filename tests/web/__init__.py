"""The web adapters (one contract run against WSGI, Flask, Django and ASGI), the examples, the demo."""
