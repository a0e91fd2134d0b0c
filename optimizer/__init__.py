"""Model sources, recipe steps and fidelity: ONNX in, smaller faithful ONNX out."""
