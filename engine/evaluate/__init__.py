"""The harmlessness evaluator behind ``cai eval``."""
