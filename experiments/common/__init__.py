"""What the benchmark harnesses share: their command line, result tables and pages, the machine stamp, worker pools."""
