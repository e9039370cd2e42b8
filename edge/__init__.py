"""Runs on the device: capture, face path, gallery, decisions, outputs."""
