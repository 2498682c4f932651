"""Small sample recordings with labels, used by the demo and the tests."""
