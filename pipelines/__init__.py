"""KFP pipelines of harmguard: wiring only; compiled YAML sits beside each source."""
