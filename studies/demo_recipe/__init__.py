"""How the demo's recipe was chosen: learning-rate schedules and batch sizes (`schedule`), and
the capacity levers for Compare Attribute (`capacity`)."""
