"""Feed ranking. For now one stage: reverse-chronological published clips."""
