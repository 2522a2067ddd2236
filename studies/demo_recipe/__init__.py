"""How the demo's recipe was chosen: learning-rate schedules and batch sizes (`schedule`)."""
