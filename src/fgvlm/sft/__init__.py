"""Fine-tuning VLMs: instruction data -> transformers.Trainer with answer-only loss."""
