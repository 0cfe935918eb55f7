"""Record -> record functions: small, pure, composable (filled in by the pipeline issue)."""
