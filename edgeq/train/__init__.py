"""Training, knowledge distillation and quantization-aware training (the only tf_keras/tfmot users)."""
