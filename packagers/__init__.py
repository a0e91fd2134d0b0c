"""Runtime closures, handlers and deployable artifacts (Lambda zips, container images)."""
