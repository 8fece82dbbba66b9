"""Celery side of videojobs."""
