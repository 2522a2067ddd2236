"""Why Compare Attribute stays at its prior and what teaches it: the capacity levers on the
probe's data (`capacity`)."""
