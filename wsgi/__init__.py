"""Deployable WSGI modules: point a WSGI server at ``wsgi.<name>:application``."""
