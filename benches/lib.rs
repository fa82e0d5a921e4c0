//! Holds verde's criterion benchmarks; see the `[[bench]]` targets in Cargo.toml.
