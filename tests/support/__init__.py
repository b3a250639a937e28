"""Helpers shared by the tests: private daemons, stand-ins and client calls."""
