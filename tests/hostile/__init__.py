"""Issue 10's proof: every attack on a hostile store directory, performed for real (see conftest.py)."""
