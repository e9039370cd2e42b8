"""INT8 on the device: calibration sets, quantization and its accuracy gate, the commands."""
