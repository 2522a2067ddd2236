"""Do models trained on mini-CLEVR carry over to genuine CLEVR images? Over training
(`over_training`)."""
