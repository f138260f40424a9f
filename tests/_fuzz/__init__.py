"""The fuzz harness of tests/test_fuzz.py, one module per entry point; every
loop runs in a child process (child.py)."""
