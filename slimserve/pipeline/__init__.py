"""The pipeline the API and the CLI run: check, compare and build call the three parts (optimizer,
profiles, packagers) in the one-way order MODEL → CANDIDATE → VERDICT → PACKAGE → REPORT and own no
optimization, limit or packaging logic of their own."""
