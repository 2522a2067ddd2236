"""Does the paper's data order or BatchNorm start matter? Over seeds (`compare`)."""
