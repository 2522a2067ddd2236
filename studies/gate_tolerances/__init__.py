"""The CI gate's tolerances: the demo's spread over seeds, and the gate on runs broken on
purpose (`seeds`)."""
