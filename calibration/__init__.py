"""INT8 calibration and TensorRT engine building, on the device (issue 5)."""
