"""Evaluation: answer matching, metrics, zero-shot evaluation."""
