"""The shipped constitutions (YAML data only); see README.md in this folder."""
