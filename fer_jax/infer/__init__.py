"""Using a trained model: find faces, crop them, classify them in batches, export to ONNX."""
