"""HTTP API blueprints (each named `bp`) and their marshmallow schemas."""
