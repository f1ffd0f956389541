"""HTTP routes, one module per concern; `api.create_app` includes each router."""
