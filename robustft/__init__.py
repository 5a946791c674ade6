"""RobustFT."""
