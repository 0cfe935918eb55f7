"""MLink simulator: a stand-in for SpiderRock's MLink server, for demos and tests."""
