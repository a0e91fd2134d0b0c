"""Recipe steps: each one reads an ONNX file and writes a new one (see base.StepSpec)."""
