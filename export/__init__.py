"""Workstation side: model conversion, training and ONNX export."""
