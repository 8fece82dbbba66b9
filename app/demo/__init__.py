"""Demo data shipped with the package: templates loaded by `videojobs up` and the tests."""
