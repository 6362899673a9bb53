"""fgvlm."""
