"""Performance: ``gradpath bench`` (ms/step side by side), time to first result, and their reports."""
