"""Export and inference: Predictor, torch.export / ONNX."""
