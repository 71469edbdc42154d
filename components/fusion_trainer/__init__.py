"""FusionTrainer: a Trainer with a second Model input (the full-image net of stage 1)."""
