"""Action detection: when an action happens in a video (issue 27)."""
