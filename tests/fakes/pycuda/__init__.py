"""Fake pycuda for tests: see driver.py."""
